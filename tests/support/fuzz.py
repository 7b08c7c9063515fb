"""An in-process fuzzer of the spec path ``interpgram check`` runs (load → validate → model → compile).

A seeded mutation run over every spec in ``specs/``: each mutant is written next to a copy of its
spec (so relative files resolve as they would for a user) and passed to
:func:`interpgram.backends.pipeline.prepare`, the function behind ``check`` and ``plan``. Each outcome
is one of

- **valid**: the mutant loads and compiles;
- **user error**: a :class:`~interpgram.grammar.SpecError` whose every diagnostic has a file, a line and
  a column;
- **crash**: any other exception, or a SpecError without a position;
- **hang**: over ``bound`` seconds (a timer interrupts it, so a run always ends).

Mutations: keys dropped, types swapped, names garbled, values copied into other places, YAML
truncation, byte flips, lines dropped or repeated, deep nesting, anchors and aliases (self-references,
alias bombs), YAML tags, huge and non-finite numbers, lone surrogates. Mutant ``i`` of seed ``S`` is
the same on every run (``--only i`` replays one).

    python tests/support/fuzz.py --mutants 10000 [--seed S] [--bound 5] [--show 3] [--save DIR]

prints ``mutants, valid, user errors, crashes, hangs, seconds`` and one line per distinct crash.
InceptionV1 specs run against randomly initialised weights and a synthetic ``dog_cat.png`` written to
the work folder (the published weights cannot be downloaded everywhere); the compile path is the same.
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*/*.yaml"))


class Hang(BaseException):
    """Raised by the timer inside a mutant that runs over the bound (a BaseException, so no
    ``except Exception`` in the code under test can swallow it)."""


# ----------------------------------------------------------------------------- the work folder
def make_workdir(root: Path) -> Path:
    """Copies of specs/ plus what the InceptionV1 specs need (random weights, a photo, a data-set
    folder, labels); sets the environment variables that point InceptionV1 at them."""
    import numpy as np
    import torch
    from PIL import Image

    from interpgram.backends.models.inceptionv1 import INTERNAL_TO_PUBLISHED, LABELS_ENV_VAR, WEIGHTS_ENV_VAR, InceptionV1

    for spec in SPECS:
        dest = root / spec.parent.name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(spec, dest / spec.name)
    inc = root / "inceptionv1"
    weights = inc / "inception5h.pth"
    if not weights.exists():
        torch.manual_seed(0)
        net = InceptionV1().eval()
        torch.save({INTERNAL_TO_PUBLISHED.get(k, k): v for k, v in net.state_dict().items()}, weights)
    yy, xx = np.mgrid[0:224, 0:224] / 223.0
    img = np.stack([0.5 + 0.4 * np.sin(7 * xx + 2 * yy), 0.5 + 0.4 * np.cos(5 * yy), 0.5 + 0.3 * np.sin(9 * xx * yy)], -1)
    Image.fromarray((img * 255).astype(np.uint8)).save(inc / "dog_cat.png")
    (inc / "imagenet").mkdir(exist_ok=True)
    for i in range(3):
        Image.fromarray((np.roll(img, 40 * i, axis=1) * 255).astype(np.uint8)).save(inc / "imagenet" / f"{i}.jpg")
    labels = ["dummy"] + [f"class {i}" for i in range(1, 1008)]
    labels[10], labels[20] = "snorkel", "scuba diver"
    (inc / "labels.txt").write_text("\n".join(labels) + "\n")
    os.environ[WEIGHTS_ENV_VAR] = str(weights)
    os.environ[LABELS_ENV_VAR] = str(inc / "labels.txt")
    return root


# ----------------------------------------------------------------------------- mutations
_WORDS = ["conv3", "mixed4d", "output", "input", "spatial", "channel", "heatmap", "bars", "star", "top1",
          "builtin:shapes-cnn", "builtin:shapes", "builtin:shapes/10", "python:os:getcwd", "file:nope.pt",
          "dog_cat.png", "missing.png", "examples", "atlas", "groups", "filter", "compare", "nmf", "select",
          "grid.hover", "where.from", "cuda:7", "ray", "imagenet", "", " ", "-", "~", "null"]
_NUMBERS = [0, -1, 1, 2, 7, 64, 65, 4097, 10 ** 9, 10 ** 20, -10 ** 30, 0.5, -0.0, 1e308, -1e308,
            float("nan"), float("inf"), float("-inf")]
_TEXT_VALUES = [
    "!!float x", "!!bool maybe", "!!int zz", "!!binary '@@'", "!!timestamp 2020-13-45", "!!python/object:os.system ls",
    "!!set {a, b}", "!!omap [a: 1]", "!!str", "!!null x", "!<tag:example.com,2000:x> 1",
    ".nan", ".inf", "-.inf", "1e400", "-1e400", "0x1F", "0o17", "1_000", "0b101", "+12", "1:20",
    "\"\\ud800\"", "\"x\\udfffy\"", "\"\\ud83d\"", "\"\\U0010FFFF\"", "\"\\x00\"", "\"a\\tb\"", "'\u2028'",
    "9" * 4301, "-" + "7" * 5000, "1" + "0" * 400 + ".5", "yes", "off", "~", "[]", "{}", "[[]]", "{a: {b: {c: 1}}}",
    "*undefined", "&a 1", "&a [*a]", "&a {x: *a}", "? [a, b]\n", "[1, 2", "{a: 1", "'unterminated", "\"bad \\q escape\"",
]


def _paths(data: Any) -> list[tuple]:
    """Every path into the data (keys of mappings and indices of lists); a node reached twice (shared
    by two places) is listed once."""
    out, todo, seen = [], [((), data)], set()
    while todo:
        prefix, node = todo.pop()
        out.append(prefix)
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            todo.extend((prefix + (k,), v) for k, v in items)
    return sorted(out, key=lambda p: (len(p), [str(x) for x in p]))


def _get(data: Any, path: tuple) -> Any:
    for p in path:
        data = data[p]
    return data


def _set(data: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(data, path[:-1])[path[-1]] = value
    return data


def _garble(rng: random.Random, s: str) -> str:
    ops = [
        lambda: s[:-1], lambda: s + rng.choice("s_x1."), lambda: s.upper(), lambda: s[::-1],
        lambda: s.replace(rng.choice(s), "", 1) if s else "x",
        lambda: (s[: (i := rng.randrange(len(s) + 1))] + rng.choice("abcxyz_:./-0") + s[i:]),
        lambda: s + "\ud800", lambda: " " + s + " ", lambda: s * rng.randint(2, 4),
        lambda: s.replace(":", "") if ":" in s else s + ":", lambda: "x" * rng.choice([1000, 100_000]),
    ]
    return rng.choice(ops)()


def _other_type(rng: random.Random, v: Any, donor: Any) -> Any:
    choices: list[Callable[[], Any]] = [
        lambda: rng.choice(_NUMBERS), lambda: rng.choice(_WORDS), lambda: None, lambda: rng.choice([True, False]),
        lambda: [v], lambda: {"x": v}, lambda: [], lambda: {}, lambda: str(v), lambda: [rng.choice(_WORDS)] * 3,
        lambda: copy.deepcopy(_get(donor, rng.choice(_paths(donor)))),
    ]
    return rng.choice(choices)()


def mutate_data(rng: random.Random, data: Any) -> Any:
    """One structural mutation of parsed spec data (in place where possible; returns the data)."""
    paths = _paths(data)
    path = rng.choice(paths)
    node = _get(data, path)
    op = rng.choice(["drop", "drop", "swap", "swap", "garble_key", "garble_value", "copy", "add", "number", "shared"])
    if op == "drop":
        parents = [p for p in paths if isinstance(_get(data, p), (dict, list)) and _get(data, p)]
        if parents:
            parent = _get(data, rng.choice(parents))
            if isinstance(parent, dict):
                parent.pop(rng.choice(list(parent)))
            else:
                parent.pop(rng.randrange(len(parent)))
    elif op == "swap" and path:
        _set(data, path, _other_type(rng, node, data))
    elif op == "garble_key":
        maps = [p for p in paths if isinstance(_get(data, p), dict) and _get(data, p)]
        if maps:
            m = _get(data, rng.choice(maps))
            k = rng.choice(list(m))
            new = _garble(rng, str(k)) if rng.random() < 0.7 else rng.choice(_WORDS + [1, 0, True, None, 2.5])
            if new not in m:
                m[new] = m.pop(k)
    elif op == "garble_value":
        strings = [p for p in paths if p and isinstance(_get(data, p), str)]
        if strings:
            p = rng.choice(strings)
            _set(data, p, _garble(rng, _get(data, p)) if rng.random() < 0.7 else rng.choice(_WORDS))
    elif op == "copy" and path:
        src = _get(data, rng.choice(paths))
        _set(data, path, copy.deepcopy(src))
    elif op == "add":
        maps = [p for p in paths if isinstance(_get(data, p), dict)]
        m = _get(data, rng.choice(maps)) if maps else None
        if isinstance(m, dict):
            donor_key = rng.choice([k for p in paths if p and isinstance(k := p[-1], str)] or ["x"])
            m[donor_key] = copy.deepcopy(_get(data, rng.choice(paths)))
    elif op == "number":
        leaves = [p for p in paths if p and isinstance(_get(data, p), (int, float)) and not isinstance(_get(data, p), bool)]
        if not leaves:
            leaves = [p for p in paths if p]
        if leaves:
            _set(data, rng.choice(leaves), rng.choice(_NUMBERS))
    elif op == "shared" and path:  # the same object in two places: the dumper writes an anchor and an alias
        maps = [p for p in paths if isinstance(_get(data, p), dict) and p[: len(path)] != path]  # no cycle
        if maps:
            target = _get(data, rng.choice(maps))
            target[rng.choice(["x", "of", "by", "a", "content", "title"])] = node
    return data


def _dump(data: Any) -> Optional[str]:
    try:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    except (yaml.YAMLError, RecursionError, UnicodeError):
        return None


def _bomb(rng: random.Random) -> str:
    levels, width = rng.randint(6, 12), rng.randint(4, 10)
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def mutate_text(rng: random.Random, text: str) -> bytes | str:
    """One textual mutation (YAML-level damage that no structural edit can make)."""
    lines = text.splitlines(keepends=True)
    op = rng.choice(["truncate", "flip", "flip", "drop_line", "dup_line", "value", "value", "value", "deep", "bomb",
                     "selfref", "indent", "tab", "alias_value"])
    if op == "truncate":
        return text[: rng.randrange(max(1, len(text)))]
    if op == "flip":
        raw = bytearray(text.encode("utf-8"))
        for _ in range(rng.randint(1, 8)):
            if raw:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if not lines:
        return text
    i = rng.randrange(len(lines))
    if op == "drop_line":
        del lines[i]
    elif op == "dup_line":
        lines.insert(i, lines[i])
    elif op == "indent":
        lines[i] = " " * rng.randint(1, 5) + lines[i]
    elif op == "tab":
        lines[i] = "\t" + lines[i]
    elif op in ("value", "deep", "alias_value"):
        # replace the value after some 'key:' on a line
        cand = [j for j, ln in enumerate(lines) if ":" in ln and not ln.lstrip().startswith("#")]
        if not cand:
            return text
        j = rng.choice(cand)
        key, _, _ = lines[j].partition(":")
        if op == "value":
            value = rng.choice(_TEXT_VALUES)
        elif op == "deep":
            n = rng.choice([50, 200, 990, 1000, 3000, 20000])
            value = rng.choice(["[" * n + "]" * n, "{a: " * n + "1" + "}" * n, "[" * n])
        else:
            value = "&z [*z]" if rng.random() < 0.5 else "*a9"
        lines[j] = f"{key}: {value}\n"
    elif op == "bomb":
        return _bomb(rng) + "".join(lines).replace("interpgram: 1", "interpgram: 1\nx: *a" + str(rng.randint(1, 5)), 1)
    elif op == "selfref":
        return text.replace("elements:", "loop: &loop [*loop]\nelements:", 1) if rng.random() < 0.5 else \
            text.replace("interpgram: 1", "interpgram: 1\nm: &m {k: *m}", 1)
    return "".join(lines)


def make_mutant(seed: int, index: int, originals: list[tuple[Path, str, Any]]) -> tuple[Path, bytes]:
    """Mutant ``index`` of ``seed``: (the copy of the spec it derives from, its bytes)."""
    rng = random.Random(f"{seed}:{index}")
    path, text, data = rng.choice(originals)
    out: bytes | str = text
    if rng.random() < 0.6:  # structural: mutate the data, dump it again
        d = copy.deepcopy(data)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            d = mutate_data(rng, d)
        dumped = _dump(d)
        out = dumped if dumped is not None else text
        if rng.random() < 0.2 and isinstance(out, str):
            out = mutate_text(rng, out)
    else:
        for _ in range(rng.choice([1, 1, 2])):
            out = mutate_text(rng, out if isinstance(out, str) else out.decode("utf-8", "replace"))
    if isinstance(out, str):
        out = out.encode("utf-8", "surrogatepass")
    return path, out


# ----------------------------------------------------------------------------- running
@dataclass
class Outcome:
    kind: str  # valid | user | crash | hang
    seconds: float
    detail: str = ""
    signature: str = ""


@dataclass
class Report:
    mutants: int = 0
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    crashes: dict[str, list[int]] = field(default_factory=dict)  # signature → mutant indices
    details: dict[str, str] = field(default_factory=dict)
    hangs: list[int] = field(default_factory=list)
    slowest: tuple[float, int] = (0.0, -1)

    def line(self) -> str:
        c = self.counts
        return (f"mutants {self.mutants}, valid {c['valid']}, user errors {c['user']}, crashes {c['crash']}, "
                f"hangs {c['hang']}, seconds {self.seconds:.1f} (slowest mutant {self.slowest[0]:.2f} s: #{self.slowest[1]})")


def _signature(e: BaseException) -> str:
    """Exception type and the innermost frame inside the project's code (where a fix belongs)."""
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if "site-packages" not in f.filename and "/tests/" not in f.filename
            and ("/grammar/" in f.filename or "/backends/" in f.filename)]
    f = (ours or frames)[-1] if frames else None
    if f is None:
        return type(e).__name__
    parts = Path(f.filename).parts
    short = "/".join(parts[-3:])
    return f"{type(e).__name__} at {short}:{f.lineno} {f.name}"


def run_one(spec_file: Path, allow_code: bool = False, bound: float = 5.0) -> Outcome:
    """``interpgram check`` in process on one file, with a hard time bound."""
    from interpgram.backends.pipeline import prepare
    from interpgram.grammar import SpecError

    def on_alarm(signum, frame):
        raise Hang()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, bound)
    t0 = time.perf_counter()
    try:
        try:
            prepare(spec_file, allow_code=allow_code)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        kind, detail, sig = "valid", "", ""
    except Hang:
        kind, detail, sig = "hang", f"over {bound} s", "hang"
    except SpecError as e:
        bad = [d for d in e.diagnostics if not (d.file and isinstance(d.line, int) and d.line >= 1
                                                 and isinstance(d.col, int) and d.col >= 1)]
        try:
            text = str(e)
            text.encode("utf-8")  # what the CLI prints must be printable
        except UnicodeError as u:
            kind, detail, sig = "crash", f"unprintable SpecError: {u}", _signature(u)
        else:
            if bad or not e.diagnostics:
                kind, detail, sig = "crash", f"SpecError without a position: {text[:300]}", "unpositioned SpecError"
            else:
                kind, detail, sig = "user", text[:300], ""
    except RecursionError as e:  # noqa: B014 - a crash like any other, kept apart for its short signature
        kind, detail, sig = "crash", f"RecursionError: {str(e)[:200]}", _signature(e)
    except Exception as e:  # noqa: BLE001 - the fuzzer's point: any other exception is a crash to report
        kind, detail, sig = "crash", "".join(traceback.format_exception_only(type(e), e)).strip()[:300], _signature(e)
    finally:
        signal.signal(signal.SIGALRM, old)
    dt = time.perf_counter() - t0
    if kind == "valid" and dt > bound:
        kind, detail, sig = "hang", f"{dt:.1f} s", "hang"
    return Outcome(kind, dt, detail, sig)


def fuzz(mutants: int, seed: int = 0, *, bound: float = 5.0, workdir: Optional[Path] = None,
         only: Optional[list[int]] = None, save: Optional[Path] = None,
         progress: Optional[Callable[[int, Report], None]] = None) -> Report:
    """Run ``mutants`` mutants of seed ``seed`` (or just the indices in ``only``)."""
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="interpgram-fuzz-")) if own else workdir
    try:
        make_workdir(root)
        originals = []
        for spec in SPECS:
            p = root / spec.parent.name / spec.name
            text = p.read_text()
            originals.append((p, text, yaml.safe_load(text)))
            run_one(p, bound=120.0)  # warm up: each model loads once (memoised), outside the timed runs
        report = Report()
        t0 = time.perf_counter()
        for i in (only if only is not None else range(mutants)):
            src, raw = make_mutant(seed, i, originals)
            target = src.with_name(f"mutant-{src.stem}.yaml")
            target.write_bytes(raw)
            out = run_one(target, bound=bound)
            report.mutants += 1
            report.counts[out.kind] += 1
            report.slowest = max(report.slowest, (out.seconds, i))
            if out.kind == "crash":
                report.crashes.setdefault(out.signature, []).append(i)
                report.details.setdefault(out.signature, out.detail)
            elif out.kind == "hang":
                report.hangs.append(i)
            if save is not None and out.kind in ("crash", "hang"):
                save.mkdir(parents=True, exist_ok=True)
                (save / f"{out.kind}-{i}-{src.stem}.yaml").write_bytes(raw)
            if progress is not None:
                progress(i, report)
        report.seconds = time.perf_counter() - t0
        return report
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutants", type=int, default=int(os.environ.get("INTERPGRAM_FUZZ_MUTANTS", "1000")))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bound", type=float, default=5.0, help="seconds after which a mutant is a hang (default 5)")
    ap.add_argument("--only", type=int, nargs="+", help="replay these mutant indices")
    ap.add_argument("--show", type=int, default=1, help="mutant indices shown per distinct crash")
    ap.add_argument("--save", type=Path, help="write every crashing or hanging mutant to this folder")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    args = ap.parse_args(argv)

    def progress(i: int, r: Report) -> None:
        if not args.quiet and r.mutants % 500 == 0:
            print(f"  … {r.mutants}: {r.counts['valid']} valid, {r.counts['user']} user errors, "
                  f"{r.counts['crash']} crashes, {r.counts['hang']} hangs", file=sys.stderr, flush=True)

    r = fuzz(args.mutants, args.seed, bound=args.bound, only=args.only, save=args.save, progress=progress)
    print(r.line())
    for sig, idx in sorted(r.crashes.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(idx):5d} × {sig}: {r.details[sig][:160]!r}  e.g. #{', #'.join(map(str, idx[: args.show]))}")
    if r.hangs:
        print(f"  hangs: #{', #'.join(map(str, r.hangs[:20]))}")
    return 1 if r.counts["crash"] or r.counts["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
