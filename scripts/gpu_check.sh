#!/usr/bin/env bash
# The release check: one short run (<= 5 min on one GPU) of generation throughput, the
# out-of-memory back-off, steering overhead and 20 bf16 LoRA steps on ~1B random VLMs of two
# families (LLaVA, Qwen2.5-VL); prints one JSON line of figures (scripts/gpu_check.py).
#   bash scripts/gpu_check.sh          # on a GPU machine (Qwen2.5-VL needs EXTRAS=dev,vision)
#   bash scripts/gpu_check.sh --cpu    # the reduced mode CI runs: tiny models on CPU
# PYTHON chooses the interpreter (default: .venv-vision when present, else .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  PYTHON=.venv/bin/python
  [ -x .venv-vision/bin/python ] && PYTHON=.venv-vision/bin/python
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=offline
"$PYTHON" scripts/gpu_check.py "$@"
