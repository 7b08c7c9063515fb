"""`interpgram check` on a ten-level "billion laughs" alias bomb (575 bytes, 10**10 nodes once expanded)
and on 1,000 levels of `[`, before and after the YAML limits, side by side.

    python benchmarks/hostile_yaml.py --before /path/to/old/.venv/bin/python [--timeout 60]

Each command runs in its own process; one that runs past --timeout is killed (the old loader needs
minutes and gigabytes on the bomb) and reported as "> timeout". Prints seconds, peak memory and the
ratio before/after.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bomb() -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\ninterpgram: 1\nmodel: builtin:shapes-cnn\nelements: {x: *a9}\n"


def deep() -> str:
    return "interpgram: 1\nmodel: builtin:shapes-cnn\nelements: " + "[" * 1000 + "]" * 1000 + "\n"


LOAD_ONLY = """
import sys, time
from interpgram.grammar import SpecError, load_spec
t = time.perf_counter()
try:
    load_spec(sys.argv[1])
except SpecError:
    pass
except RecursionError:
    print("RecursionError", file=sys.stderr)
print(f"load_spec alone: {time.perf_counter() - t:.3f} s", file=sys.stderr)
"""


def timed(python: str, spec: Path, timeout: float, load_only: bool = False) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, first line of stderr) of `interpgram check spec` (seconds = inf when
    killed); with ``load_only``, of loading the spec in process, its time in the message."""
    t0 = time.perf_counter()
    cmd = [python, "-c", LOAD_ONLY, str(spec)] if load_only else [python, "-m", "interpgram.backends.cli", "check", str(spec)]
    errf = tempfile.TemporaryFile()  # a file, not a pipe: a 3,000-line traceback would fill a pipe and block
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, start_new_session=True)
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout:
            os.killpg(p.pid, signal.SIGKILL)
            _, status, usage = os.wait4(p.pid, 0)
            return float("inf"), usage.ru_maxrss / 1024, "killed"
        time.sleep(0.05)
    dt = time.perf_counter() - t0
    errf.seek(0)
    err = errf.read().decode("utf-8", "replace").strip().splitlines()
    code = os.waitstatus_to_exitcode(status)
    if load_only:
        return dt, usage.ru_maxrss / 1024, " ".join(err[-2:])
    first = err[0][:140] if err else ""
    if err and err[0].startswith("Traceback"):
        first = f"a traceback of {len(err)} lines ending {err[-1][:80]!r}"
    return dt, usage.ru_maxrss / 1024, f"exit {code}: {first}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="python of an install without the limits")
    ap.add_argument("--after", default=sys.executable, help="python of this install (default: this one)")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {"billion laughs (10 levels)": bomb(), "1,000 levels of [": deep()}
        for name, text in cases.items():
            spec = Path(tmp) / "hostile.yaml"
            spec.write_text(text)
            b, bm, bmsg = timed(args.before, spec, args.timeout)
            a, am, amsg = timed(args.after, spec, args.timeout)
            bs = f"> {args.timeout:.0f} s (killed)" if b == float("inf") else f"{b:.2f} s"
            print(f"{name} ({len(text.encode())} bytes): before {bs}, {bm:.0f} MB peak — {bmsg}")
            print(f"{'':>{len(name)}}   after {a:.2f} s, {am:.0f} MB peak — {amsg}")
            rel = "≥ " if b == float("inf") else ""
            print(f"{'':>{len(name)}}   ratio before/after {rel}{(args.timeout if b == float('inf') else b) / a:.1f}×")
            for label, py in (("before", args.before), ("after", args.after)):
                t, m, msg = timed(py, spec, args.timeout, load_only=True)
                ts = f"> {args.timeout:.0f} s (killed)" if t == float("inf") else f"{t:.2f} s"
                print(f"{'':>{len(name)}}   {label}, the loader in process: {msg or ts} (process {ts}, {m:.0f} MB peak)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
