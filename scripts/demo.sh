#!/usr/bin/env bash
# README command 1: set up, then run the main job (the end-to-end demo on synthetic phantoms).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh debian || echo "demo: Debian packages for the napari viewer missing; the demo does not need them" >&2
bash scripts/setup.sh python
export MPLBACKEND=Agg
exec "$ROOT/.venv/bin/cochseg3d" demo "$@"
