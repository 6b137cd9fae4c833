#!/usr/bin/env bash
# Shared set-up for the README's two commands: a .venv at the repo root with torch pinned, the
# package, the napari plugin and the test tools. Idempotent: a stamp skips pip when nothing changed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
VENV="$ROOT/.venv"

debian_packages() {
  # What Qt's xcb platform plugin and xvfb-run need for the napari tests.
  local want=(xvfb xauth libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
    libxcb-xkb1 libxkbcommon-x11-0 libgl1 libegl1 libfontconfig1 libdbus-1-3 libglib2.0-0)
  local missing=() p
  command -v dpkg >/dev/null 2>&1 || { echo "setup: not a Debian system; install xvfb and Qt's xcb libraries yourself" >&2; return 1; }
  for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  local sudo=""
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: need root to install: ${missing[*]}" >&2; return 1; }
    sudo="sudo"
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

python_env() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup: creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.cochseg3d-setup"
  local want
  want=$(cat setup.cfg scripts/constraints.txt napari_plugin/setup.cfg 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [[ -f "$stamp" && $(cat "$stamp") == "$want" ]]; then
    return 0
  fi
  echo "setup: installing Python packages into $VENV (torch pinned by scripts/constraints.txt)"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
  "$VENV/bin/python" -m pip install -q -c scripts/constraints.txt torch
  "$VENV/bin/python" -m pip install -q -c scripts/constraints.txt -e ".[napari,seg,test]" -e napari_plugin
  echo "$want" > "$stamp"
}

case "${1:-all}" in
  python) python_env ;;
  debian) debian_packages ;;
  all) debian_packages || echo "setup: Debian packages missing; the napari tests will fail" >&2; python_env ;;
esac
