#!/usr/bin/env bash
# Rehearse the GPU check here before spending GPU time: its CPU mode (tiny models) on the GPU
# machine's transformers version, installed into a temporary folder put first on PYTHONPATH.
# What breaks here on a version difference breaks there too (e.g. a TrainingArguments field that
# 5.17 does not have yet).
#
#     bash bench/gpu_rehearsal.sh                    # transformers 5.17.0, as on the GPU machine
#     GPU_TRANSFORMERS=5.20.0 bash bench/gpu_rehearsal.sh --out /tmp/r.json
#
# Needs PyPI. torch cannot be swapped this way (its wheels are GBs); the GPU machine has 2.11.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TRANSFORMERS="${GPU_TRANSFORMERS:-5.17.0}"
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT

# transformers 5.x wants huggingface-hub < 2; the rest of this venv stays as it is.
"$PY" -m pip install -q --disable-pip-version-check --no-deps --only-binary=:all: --target "$site" \
  "transformers==$TRANSFORMERS" "huggingface-hub>=1.5,<2"
echo "rehearsing with transformers $TRANSFORMERS from $site"
PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$ROOT/bench/gpu_check.py" --device cpu --tiny "$@"
