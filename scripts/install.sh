#!/usr/bin/env bash
# Creates .venv (if missing) and installs vsc-calib into it, torch first.
#
# torch is installed before anything else so that no other package pulls in a build you
# did not choose. The default is the CPU wheel this project is developed and tested with.
# With a GPU, pick your build, e.g.:
#   TORCH_SPEC="torch==2.9.1" TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 bash scripts/install.sh
# Extras (dev, slurm, optuna) are chosen with EXTRAS, default "dev".
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  .venv/bin/pip install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
else
  .venv/bin/pip install -q "$TORCH_SPEC"
fi
.venv/bin/pip install -q -e ".[${EXTRAS}]"
echo "installed: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "| transformers", transformers.__version__)')"
