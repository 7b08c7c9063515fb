"""What the benchmark scripts share: the ``--device`` check and the final ``RESULT {json}`` line.

A script is run as ``python benchmarks/X.py``, so this folder is on ``sys.path`` and ``import _bench``
finds this file. benchmarks/gpu.py runs the scripts and reads their last ``RESULT`` line.
"""
from __future__ import annotations

import json
import sys


def device_or_exit(name: str, script: str):
    """``pick_device(name)``, or a one-line error naming what to pass instead and exit status 2."""
    import torch

    from interpgram.backends.execute.device import pick_device

    try:
        return pick_device(name)
    except RuntimeError as e:
        if name.startswith("cuda") and not torch.cuda.is_available():
            why = f"torch {torch.__version__} sees no CUDA device here"
        else:
            why = str(e).splitlines()[0]
        print(f"{script}: --device {name}: {why}; use --device cpu or --device auto", file=sys.stderr)
        raise SystemExit(2) from None


def result(**fields) -> None:
    """Print the machine-readable last line: ``RESULT`` and the measured figures as one JSON object."""
    print("RESULT " + json.dumps(fields), flush=True)
