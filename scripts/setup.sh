#!/usr/bin/env bash
# Create .venv (if needed) and install interpgram into it, with torch pinned by constraints.txt so
# that pip never swaps in a multi-gigabyte CUDA build. Extra pip arguments (e.g. '.[test]') follow.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
target=${1:-.}
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e "$target"
