"""Every benchmark that matters, in one run, with one summary table: the run to make when a GPU is lent.

    python benchmarks/gpu.py                      # --device auto: cuda where torch sees one, else cpu
    python benchmarks/gpu.py --device cuda        # the full run, sized for under 8 minutes on one H200
    python benchmarks/gpu.py --device cpu --quick # tiny sizes, about 1.5 minutes on 2 CPU cores (the test runs it)
    python benchmarks/gpu.py --only fusion,icon_floor --dry-run

Each benchmark runs as its own process (``sys.executable benchmarks/X.py --device D ...``) under a
time limit; its output is printed as it finishes and its last line, ``RESULT {json}``, gives the
figures of the summary: the fusion ratio, links, feature-visualisation batching, bfloat16 autocast on
and off, the icon step against its floor with icon-steps per second at 128 and 224 px, atlas
collection images per second (the built-in CNN; and InceptionV1's 1,008 classes in the full run only:
one image of its naive loop is 1,008 backward passes, a minute of CPU), and the atlas of 100,000
activations by stage. UMAP stays on the CPU; numba's compilation of it is cached in
``NUMBA_CACHE_DIR`` (default ~/.cache/interpgram/numba), so only the first run on a machine pays it.

The header names the device (``torch.cuda.get_device_name``), torch and the thread count; the last
line is ``RESULT {json}`` with every benchmark's figures. Exit status 0 when all ran, 1 when one
failed or ran out of time (its stderr's tail is printed), 2 when the device asked for is missing.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
INCEPTION = "python:interpgram.backends.models.inceptionv1:InceptionV1"
FULL_BUDGET_S = 8 * 60


def _fusion(r: dict) -> list[str]:
    return [f"fused {r['fused_s'] * 1000:.1f} ms for {r['images']} images; per-element {r['per_element_ratio']:.2f}×, "
            f"captum {r['captum_ratio']:.2f}× slower"]


def _links(r: dict) -> list[str]:
    return [f"fused {r['ratio']:.2f}× faster than one by one ({r['fused_s']:.3f} vs {r['one_by_one_s']:.3f} s, "
            f"{r['selections']} selections); live {r['live_first_ms']:.1f} ms, again {r['live_again_ms']:.1f} ms"]


def _batching(r: dict) -> list[str]:
    return [f"batched {r['batched_icons_per_s']:.2f} icons/s vs {r['single_icons_per_s']:.2f} one at a time: "
            f"{r['ratio']:.2f}× ({r['icons']} icons, {r['steps']} steps, {r['size']} px)"]


def _autocast(r: dict) -> list[str]:
    return [f"float32 {r['float32_s']:.2f} s, bfloat16 {r['bfloat16_s']:.2f} s: {r['speed_ratio']:.2f}× "
            f"({r['icons']} icons, {r['steps']} steps); objective bfloat16/float32 {r['objective_ratio']:.3f}"]


def _icon_floor(r: dict) -> list[str]:
    return [f"{x['model']} {x['layer']} {x['size']} px, batch {x['batch']}: {x['icons_per_s']:.1f} icon-steps/s, "
            f"step/floor {x['ratio']:.2f} ({x['step_s'] * 1000:.1f} vs {x['floor_s'] * 1000:.1f} ms)"
            for x in r["rows"]]


def _collect(r: dict) -> list[str]:
    return [f"collect {r['collect_images_per_s']:.1f} images/s vs naive {r['naive_images_per_s']:.2f}: "
            f"{r['speedup']:.1f}× ({r['n']} images, {r['classes']} classes, {','.join(r['layers'])})"]


def _atlas(r: dict) -> list[str]:
    stages = " · ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
    return [f"{r['n']:,} activations, {r['icons']} icons × {r['steps']} steps: {r['total_s']:.1f} s",
            f"= {stages}",
            f"collection {r['collection_images_per_s']:.0f} images/s; again from the cache {r['again_s']:.1f} s"]


@dataclass
class Bench:
    name: str
    script: str
    full: list[str]
    quick: list[str] | None  # None: the full run only
    timeout: tuple[int, int]  # seconds: full, quick
    figures: Callable[[dict], list[str]]  # the summary's lines from the RESULT


BENCHMARKS = [
    Bench("fusion", "fusion.py", ["--images", "32", "--repeat", "5"], ["--images", "8", "--repeat", "2"],
          (120, 90), _fusion),
    Bench("links", "links.py", ["--repeat", "3"], ["--repeat", "1"], (120, 90), _links),
    Bench("featurevis_batching", "featurevis_batching.py", ["--icons", "16", "--steps", "64", "--size", "64"],
          ["--icons", "4", "--steps", "8"], (120, 90), _batching),
    Bench("featurevis_autocast", "featurevis_autocast.py", ["--icons", "16", "--steps", "128"],
          ["--icons", "4", "--steps", "8"], (120, 90), _autocast),
    Bench("icon_floor", "icon_floor.py",
          ["--model", "shapes-cnn,inceptionv1,efficientnet-lite0", "--sizes", "128,224", "--batches", "16",
           "--steps", "32"],  # 32 steps: a GPU step is milliseconds, 8 would time little more than the noise
          ["--model", "shapes-cnn", "--sizes", "128,224", "--batches", "4", "--steps", "4"], (240, 120), _icon_floor),
    # the naive loop is one image at a time with a backward pass per class: 500 images give its rate
    Bench("atlas_collect", "atlas_collect.py", ["--skip-rss", "--quiet", "--n", "2000", "--naive-n", "500"],
          ["--skip-rss", "--quiet", "--n", "128", "--naive-n", "16", "--batch-size", "64"], (180, 90), _collect),
    Bench("atlas_collect_k1008", "atlas_collect.py",
          ["--skip-rss", "--quiet", "--allow-code", "--model", INCEPTION, "--layers", "mixed4d", "--n", "64",
           "--naive-n", "2", "--batch-size", "32"], None, (180, 0), _collect),
    # 100,000 activations, 20 × 20 grid, 128 icon steps: the script's defaults
    Bench("atlas_end_to_end", "atlas_end_to_end.py", [],
          ["--n", "1000", "--grid", "4", "--steps", "4", "--fit-sample", "500"], (420, 180), _atlas),
]


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone: nothing left to kill
        os.killpg(proc.pid, signal.SIGKILL)  # the benchmark and any process it started


def run_one(b: Bench, device: str, quick: bool, env: dict) -> dict:
    cmd = [sys.executable, str(HERE / b.script), "--device", device, *(b.quick if quick else b.full)]
    limit = b.timeout[1 if quick else 0]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=HERE.parent, start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc)
        out, err = proc.communicate()
    except BaseException:  # Ctrl-C: take the benchmark down with us
        _kill(proc)
        raise
    wall = time.perf_counter() - t
    lines = out.splitlines()
    found = [ln[len("RESULT "):] for ln in lines if ln.startswith("RESULT ")]
    result, why = None, None
    if timed_out:
        why = f"ran past its {limit} s limit"
    elif proc.returncode != 0:
        why = f"exited with status {proc.returncode}"
    elif not found:
        why = "printed no RESULT line"
    else:
        try:
            result = json.loads(found[-1])
        except json.JSONDecodeError as e:
            why = f"printed a RESULT line that is not JSON ({e})"
    return {"name": b.name, "command": cmd, "rc": proc.returncode, "wall_s": wall, "result": result, "error": why,
            "stdout": "\n".join(ln for ln in lines if not ln.startswith("RESULT ")), "stderr": err}


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                    help="auto: cuda where torch sees one, else cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that every benchmark still runs")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)

    import torch

    names = [b.name for b in BENCHMARKS]
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in names]
    if bad:
        ap.error(f"--only {', '.join(bad)}: choose from {', '.join(names)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(f"benchmarks/gpu.py: --device cuda, but torch {torch.__version__} ({build}) sees no CUDA device here; "
              "use --device cpu, or a CUDA build of torch on a machine with a GPU", file=sys.stderr)
        return 2
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    chosen = [b for b in BENCHMARKS if (not only or b.name in only)]
    runs = [b for b in chosen if not (args.quick and b.quick is None)]

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "interpgram" / "numba"
    env.setdefault("NUMBA_CACHE_DIR", str(cache))
    name = torch.cuda.get_device_name(0) if device == "cuda" else (platform.processor() or platform.machine())
    print(f"device {device} ({name}), torch {torch.__version__}"
          + (f" (CUDA {torch.version.cuda})" if device == "cuda" else "")
          + f", {torch.get_num_threads()} threads, {os.cpu_count()} CPU cores, python {platform.python_version()}; "
          f"{'quick' if args.quick else 'full'} run, NUMBA_CACHE_DIR={env['NUMBA_CACHE_DIR']}", flush=True)
    if args.dry_run:
        for b in runs:
            print(" ".join([sys.executable, f"benchmarks/{b.script}", "--device", device,
                            *(b.quick if args.quick else b.full)]))
        return 0

    done = []
    t0 = time.perf_counter()
    for i, b in enumerate(runs, 1):
        r = run_one(b, device, args.quick, env)
        done.append(r)
        head = f"[{i}/{len(runs)}] {b.name}: {r['wall_s']:.1f} s"
        print(f"\n{head} {'FAILED: ' + r['error'] if r['error'] else ''}\n  $ " + " ".join(r["command"][1:]))
        print("  " + r["stdout"].rstrip().replace("\n", "\n  "), flush=True)  # its stderr's tail if it failed: at the end
    total = time.perf_counter() - t0

    print(f"\nsummary: device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'quick' if args.quick else 'full'} run")
    print(f"{'benchmark':<22}{'wall s':>8}  figures")
    for r in done:
        if r["error"]:
            lines = [f"FAILED: {r['error']}"]
        else:
            try:
                lines = BENCH[r["name"]].figures(r["result"])
            except (KeyError, TypeError, ValueError) as e:
                r["error"] = f"its RESULT lacks a figure ({e!r})"
                lines = [f"FAILED: {r['error']}"]
        print(f"{r['name']:<22}{r['wall_s']:>8.1f}  {lines[0]}")
        for ln in lines[1:]:
            print(f"{'':<32}{ln}")
    for b in chosen:
        if b not in runs:
            print(f"{b.name:<22}{'':>8}  not in --quick (the full run only)")
    over = "" if args.quick else (f" (over the {FULL_BUDGET_S // 60}-minute budget)" if total > FULL_BUDGET_S
                                  else f" (within the {FULL_BUDGET_S // 60}-minute budget)")
    print(f"{'total':<22}{total:>8.1f}{over}")

    failed = [r for r in done if r["error"]]
    for r in failed:
        print(f"\n{r['name']} failed: {r['error']}\n  $ {' '.join(r['command'])}\n"
              + "  " + (_tail(r["stderr"] or r["stdout"]) or "(it printed nothing)").replace("\n", "\n  "), file=sys.stderr)
    summary = {"device": device, "device_name": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "quick": args.quick, "total_s": total,
               "benchmarks": {r["name"]: {"wall_s": r["wall_s"], "rc": r["rc"], "error": r["error"],
                                          "result": r["result"]} for r in done}}
    print("RESULT " + json.dumps(summary, allow_nan=True), flush=True)
    return 1 if failed else 0


BENCH = {b.name: b for b in BENCHMARKS}

if __name__ == "__main__":
    sys.exit(main())

