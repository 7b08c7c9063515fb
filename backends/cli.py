"""The ``interpgram`` command."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  interpgram check specs/shapes/demo.yaml          validate a spec against its model
  interpgram plan specs/shapes/demo.yaml           show the fused plan (passes, ops, memory)
  interpgram render specs/shapes/demo.yaml -o report
                                                   compute and write report/index.html
  interpgram layers builtin:shapes-cnn             list addressable layers and their shapes
  interpgram schema > interpgram.schema.json       JSON Schema for editor autocompletion

Specs that build models from Python code (model: python:pkg.mod:factory) only run with --allow-code.
"""


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _prepare(args):
    from .pipeline import prepare
    return prepare(args.spec, allow_code=args.allow_code)


def cmd_check(args) -> int:
    prep = _prepare(args)
    n = len(prep.loaded.spec.elements)
    print(f"{args.spec}: ok — {n} element{'s' if n != 1 else ''} on {prep.model.name} "
          f"({len(prep.info.layers)} layers, {len(prep.info.classes)} classes)")
    for note in prep.model.notes:
        print(f"note: {note}")
    return 0


def cmd_plan(args) -> int:
    prep = _prepare(args)
    if args.json:
        from dataclasses import asdict
        print(json.dumps({k: asdict(v) | {"op": type(v).__name__} for k, v in prep.plan.ops.items()},
                         indent=2, default=str))
    else:
        print(prep.plan.explain())
    return 0


def cmd_render(args) -> int:
    from tqdm import tqdm

    from .pipeline import render

    bars: list = []  # created on the first report of work, so a fully cached render shows none

    def progress(stage: str, done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=stage, unit="pass", file=sys.stderr, disable=args.quiet, leave=False))
        bar = bars[0]
        bar.total = total
        bar.n = done
        bar.set_description(stage)
        bar.refresh()

    cache = False if args.no_cache else (args.cache_dir if args.cache_dir else None)
    try:
        path, prep, results = render(args.spec, args.out, allow_code=args.allow_code, cache=cache, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    st = results.stats
    print(f"wrote {path.resolve()}")
    print(f"  {len(prep.loaded.spec.elements)} elements · {st.forward_passes} forward / {st.backward_passes} backward "
          f"passes computed · cache {st.cache_hits} hits, {st.cache_misses} misses · device {results.device}")
    return 0


def cmd_layers(args) -> int:
    from .models import ModelSourceError, load_model
    try:
        model = load_model(args.model, weights=args.weights, allow_code=args.allow_code)
    except ModelSourceError as e:
        _err(f"error: {e}")
        return 1
    layers = model.layers()
    width = max(len(n) for n in layers) if layers else 10
    print(f"{model.name}: input {tuple(model.preprocess.size)} · {len(model.classes)} classes · "
          f"{len(layers)} layers (module path, output shape per image)")
    print(f"  {'input':<{width}}  {(3, *model.preprocess.size)}")
    for name, shape in layers.items():
        if args.all or "." not in name:
            print(f"  {name:<{width}}  {shape}")
    print(f"  {'output':<{width}}  ({len(model.classes)},)")
    if not args.all and any("." in n for n in layers):
        print("  (submodules hidden; --all lists every module path)")
    return 0


def cmd_schema(args) -> int:
    from interpgram.grammar import json_schema
    print(json.dumps(json_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interpgram", description="A declarative grammar of interpretability for PyTorch models.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    try:
        from importlib.metadata import version
        p.add_argument("--version", action="version", version=f"interpgram {version('interpgram')}")
    except Exception:  # pragma: no cover - not installed
        pass
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def spec_cmd(name, help_, fn):
        s = sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        s.add_argument("spec", help="path to a YAML spec")
        s.add_argument("--allow-code", action="store_true", help="allow python: model sources to run code")
        s.set_defaults(fn=fn)
        return s

    spec_cmd("check", "validate a spec and its layer and class names against the model", cmd_check)
    pl = spec_cmd("plan", "print the fused plan: passes, ops and estimated tensor memory", cmd_plan)
    pl.add_argument("--json", action="store_true", help="the plan's ops as JSON")
    r = spec_cmd("render", "compute the interface and write a self-contained report", cmd_render)
    r.add_argument("-o", "--out", default="report", help="output folder (default: report)")
    r.add_argument("--no-cache", action="store_true", help="recompute everything and write nothing to the cache")
    r.add_argument("--cache-dir", help="result cache folder (default: ~/.cache/interpgram/results)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    la = sub.add_parser("layers", help="list a model's addressable layers and output shapes")
    la.add_argument("model", help="builtin:shapes-cnn, inceptionv1, torchvision:NAME, timm:NAME, file:PATH, python:MOD:FN")
    la.add_argument("--weights", help="weights file for the model")
    la.add_argument("--all", action="store_true", help="list submodules too")
    la.add_argument("--allow-code", action="store_true", help="allow python: model sources to run code")
    la.set_defaults(fn=cmd_layers)

    sc = sub.add_parser("schema", help="print the spec's JSON Schema")
    sc.set_defaults(fn=cmd_schema)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 2
    from interpgram.grammar import SpecError
    try:
        return args.fn(args)
    except SpecError as e:
        _err(str(e))
        n = len(e.diagnostics)
        _err(f"{n} problem{'s' if n != 1 else ''} found")
        return 1
    except KeyboardInterrupt:
        _err("interrupted; nothing half-written was left behind")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
