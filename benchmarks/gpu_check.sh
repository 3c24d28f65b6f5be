#!/usr/bin/env bash
# The GPU check in one command (under 8 minutes on one H100/H200): installs what is missing,
# then runs benchmarks/gpu_check.py (training MFU in bf16 + torch.compile, generation against
# HF, a 2 models x 2 seeds compare, the SDPA flash backend) and writes one JSON of figures.
#
#   benchmarks/gpu_check.sh                       # -> gpu_check.json
#   benchmarks/gpu_check.sh --out figures.json
#   benchmarks/gpu_check.sh --dry-run             # tiny sizes on the CPU, no install: a test runs this
#
# TORCH_VERSION pins the CUDA wheel to install when torch (with CUDA) is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
for arg in "$@"; do [[ "$arg" == "--dry-run" ]] && DRY_RUN=1; done
PYTHON="${PYTHON:-python3}"  # the test passes its own interpreter
LIMIT="${GPU_CHECK_LIMIT_S:-470}"  # stays under 8 minutes with the install

if [[ "$DRY_RUN" == 0 ]]; then
  if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    # PyPI's Linux torch wheels are the CUDA builds.
    "$PYTHON" -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
  fi
  "$PYTHON" -c "import transformers" 2>/dev/null || "$PYTHON" -m pip install --quiet "transformers>=4.44"
  "$PYTHON" -c "import mlproject" 2>/dev/null || "$PYTHON" -m pip install --quiet -e .
  "$PYTHON" -c "import mlproject, mlflow, tokenizers, xxhash"  # fail here, not minutes in
fi

export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout --signal=INT --kill-after=20 "$LIMIT" "$PYTHON" -m benchmarks.gpu_check "$@"
