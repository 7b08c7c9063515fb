#!/usr/bin/env bash
# Set everything up and run the whole test suite, browser tests included.
# Browser tests drive Debian's chromium; when it is missing and we are root, it is installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh '.[test]'
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    bash .ci/install-browser.sh
  else
    echo "note: chromium is not installed; the browser tests will fail (Debian/Ubuntu: sudo apt-get install -y chromium)" >&2
  fi
fi
# numba (used by umap-learn) keeps compiled functions here between runs
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$HOME/.cache/interpgram/numba}
# lint first (seconds): the rule set is in pyproject.toml ([tool.ruff.lint]); any finding fails the run
.venv/bin/ruff check grammar backends tests scripts benchmarks
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
