#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (napari tests on a virtual display).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh debian
bash scripts/setup.sh python
export MPLBACKEND=Agg
exec xvfb-run -a -s "-screen 0 1280x1024x24" "$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
