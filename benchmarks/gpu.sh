#!/bin/sh
# Every benchmark in one call (see benchmarks/gpu.py): sh benchmarks/gpu.sh [--device auto|cuda|cpu] [--quick] [--only a,b]
cd "$(dirname "$0")/.." && exec "${PYTHON:-.venv/bin/python}" benchmarks/gpu.py "$@"
