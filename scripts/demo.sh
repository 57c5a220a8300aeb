#!/usr/bin/env bash
# One command: install napari-emseg in ./.venv and run the main job on the bundled sample.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
napari-emseg demo --out "${1:-demo_out}"
