#!/usr/bin/env bash
# Builds the wheel, installs it (torch first) into a fresh venv outside the repository and
# runs the main job there: what `pip install vsc-calib` gives a user must work on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
started=$(date +%s)
"$PYTHON" -m pip wheel --no-deps -q . -w "$work/dist"
"$PYTHON" -m venv "$work/venv"
# shellcheck disable=SC2086  # TORCH_SPEC may hold several requirements
"$work/venv/bin/pip" install -q $TORCH_SPEC
"$work/venv/bin/pip" install -q "$work"/dist/*.whl
mkdir "$work/elsewhere"
(cd "$work/elsewhere" && OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$work/venv/bin/calib-run")
test -f "$(ls -d "$work"/elsewhere/outputs/*/*/metrics.json | head -1)"
echo "wheel check passed in $(( $(date +%s) - started )) s: installed into a fresh venv, calib-run ran from $work/elsewhere"
