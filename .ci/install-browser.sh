#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (Playwright drives it through executable_path;
# never `playwright install`, which downloads a browser build of its own and cannot work here).
# Does nothing when chromium is already on PATH; fails loudly when it cannot install a working one.
set -euo pipefail

check() {
  local v
  if ! v=$(chromium --version 2>&1); then
    echo "install-browser: chromium is on PATH but does not run: $v" >&2
    return 1
  fi
  # Debian's wrapper script may print shell noise before the version: report the last line
  echo "install-browser: $(printf '%s\n' "$v" | tail -n 1)"
}

if command -v chromium >/dev/null 2>&1; then
  check
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: chromium is missing and there is no apt-get here: install chromium with your package manager" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-browser: chromium is missing and this is not root: run 'sudo apt-get install -y chromium'" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-browser: installing Debian's chromium (apt-get)"
if ! apt-get update -qq; then
  echo "install-browser: apt-get update failed" >&2
  exit 1
fi
# fonts-liberation is only a Recommends of chromium: without a font, text renders as boxes in screenshots
if ! apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; then
  echo "install-browser: apt-get install chromium failed" >&2
  exit 1
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "install-browser: apt-get finished but chromium is still not on PATH" >&2
  exit 1
fi
check
