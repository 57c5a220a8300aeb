#!/usr/bin/env bash
# Create ./.venv and install napari-emseg into it (sourced by demo.sh and test.sh).
# EXTRAS selects pip extras (default: none); TORCH_SPEC the torch to install first
# (default torch==2.13.0: a CPU build on the CI machines; a CUDA build from PyPI elsewhere).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
fi
python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import napari_emseg, torch; print('napari-emseg', napari_emseg.__version__, '| torch', torch.__version__, '| CUDA', torch.cuda.is_available())"
