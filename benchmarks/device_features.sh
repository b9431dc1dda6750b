#!/usr/bin/env bash
# One device call for the feature figures of issues 26 (studio), 27 (ReStyle) and 28 (PTI), each bounded so
# that the whole call ends inside the device's 10-minute limit; every benchmark appends its JSON lines to
# $OUT as it goes, so a phase cut short still leaves what it measured. Run from the repository root with
#   carry = [".whl/ml_collections-1.1.0-py3-none-any.whl", "external/PTI", "external/stylegan2-ada-pytorch",
#            "external/pylibs", "external/restyle-encoder", "external/torch_ext_h100", "external/assets"]
# (external/ is git-ignored: the official repositories fetched for the side-by-side runs, prebuilt
# rosinality CUDA ops, the lpips package, the sample photo). Budgets in seconds: STUDIO_S, RESTYLE_S, PTI_S.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/ml_collections-*.whl
export PYTHONPATH=/tmp/site:$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt"
python3 -c 'import jax, torch; print("jax", jax.__version__, "torch", torch.__version__)' >> "$OUT/gpu.txt"
export TORCH_EXTENSIONS_DIR=$PWD/external/torch_ext TORCH_CUDA_ARCH_LIST=9.0
if [ -f benchmarks/restyle_vs_official.py ]; then
  timeout "${RESTYLE_S:-170}" python3 benchmarks/restyle_vs_official.py --official external/restyle-encoder \
    --torch-ops external/torch_ext_h100/torch_ext --json "$OUT/restyle.jsonl" > "$OUT/restyle.log" 2>&1
  echo "restyle rc=$?" >> "$OUT/gpu.txt"
fi
timeout "${PTI_S:-240}" python3 benchmarks/pti_vs_official.py --workdir /tmp/pti --budget-s $(( ${PTI_S:-240} - 5 )) \
  --json "$OUT/pti.jsonl" > "$OUT/pti.log" 2>&1
echo "pti rc=$?" >> "$OUT/gpu.txt"
timeout "${STUDIO_S:-150}" python3 benchmarks/studio_latency.py --photo external/assets/input_img.jpg --no-align \
  --phase-timeout 60 --json "$OUT/studio.jsonl" > "$OUT/studio.log" 2>&1
echo "studio rc=$?" >> "$OUT/gpu.txt"
