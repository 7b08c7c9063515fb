#!/usr/bin/env bash
# Every benchmark in one call (see benchmarks/gpu.py): bash benchmarks/gpu.sh [--device cuda] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" benchmarks/gpu.py "$@"
