#!/usr/bin/env bash
# Creates a virtual environment (if missing) and installs vsc-calib into it, torch first.
#
# torch is installed before anything else so that no other package pulls in a build you
# did not choose. The default is the CPU wheel this project is developed and tested with.
# TORCH_SPEC may hold several requirements, separated by spaces. With a GPU, pick your
# build, e.g.:
#   TORCH_SPEC="torch==2.9.1 torchvision==0.24.1" \
#     TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 EXTRAS=dev,vision bash scripts/install.sh
# Extras (dev, slurm, optuna, vision) are chosen with EXTRAS, default "dev".
#
# The vision extra (torchvision + num2words) is what Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision,
# InternVL and SmolVLM2 processors need. torchvision must match torch exactly, so
# EXTRAS containing "vision" defaults to its own environment, .venv-vision, with the pair
# torch==2.14.1 + torchvision==0.29.1 (the CPU pair tested in CI; the torchvision wheel
# next to torch 2.13.0 is a CUDA build that breaks `import torchvision` on CPU machines).
# VENV chooses the environment's folder.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-dev}
case ",$EXTRAS," in
  *,vision,*)
    VENV=${VENV:-.venv-vision}
    TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
    ;;
  *)
    VENV=${VENV:-.venv}
    TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
    ;;
esac

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
read -r -a torch_reqs <<<"$TORCH_SPEC"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "$VENV/bin/pip" install -q "${torch_reqs[@]}" --index-url "$TORCH_INDEX_URL"
else
  "$VENV/bin/pip" install -q "${torch_reqs[@]}"
fi
# The torch requirements are repeated so that no extra moves torch or torchvision.
"$VENV/bin/pip" install -q -e ".[${EXTRAS}]" "${torch_reqs[@]}"
echo "installed into $VENV: $("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "| transformers", transformers.__version__)')"
