#!/usr/bin/env bash
# Create .venv with the toolkit installed (extras in $1, e.g. "test"), and Graphviz for draw-net.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"

if ! command -v dot >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
    if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
      echo "installing Graphviz (for siamese draw-net)..." >&2
      ($sudo apt-get update -qq && $sudo apt-get install -y -qq graphviz >/dev/null) \
        || echo "warning: could not install Graphviz; draw-net will only write .dot files" >&2
    fi
  elif command -v brew >/dev/null 2>&1; then
    brew install graphviz || true
  fi
  command -v dot >/dev/null 2>&1 || echo "note: Graphviz 'dot' not found; install it to render draw-net pictures" >&2
fi
