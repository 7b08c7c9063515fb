"""The ``interpgram`` command.

Each command imports what it needs inside its own function, on purpose: ``interpgram --help``,
``cache info`` and ``schema`` start without loading torch, Panel or the models (a second or more),
and ``serve`` alone pays for Panel. Every function-local import below is there for that reason.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

EXAMPLES = """\
examples:
  interpgram check specs/shapes/demo.yaml          validate a spec against its model
  interpgram plan specs/shapes/demo.yaml           show the fused plan (passes, ops, memory)
  interpgram render specs/shapes/demo.yaml -o report
                                                   compute and write report/index.html
  interpgram serve specs/shapes/demo.yaml --port 5006
                                                   live dashboard at http://127.0.0.1:5006/ (reloads on edit)
  interpgram layers builtin:shapes-cnn             list addressable layers and their shapes
  interpgram schema > interpgram.schema.json       JSON Schema for editor autocompletion
  interpgram sprites builtin:shapes-cnn conv4 -o conv4.png
                                                   render (and cache) the icon of every channel of a layer
  interpgram cache info                            where the result cache is, what it holds, its size limit
  interpgram cache clear                           delete every cached result and atlas collection

Specs that build models from Python code (model: python:pkg.mod:factory) only run with --allow-code.
"""


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line a user reads (``warning: …``), not Python's file:line and source line."""
    _err(f"warning: {message}")


def _prepare(args):
    from interpgram.backends.pipeline import prepare
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
        from interpgram.backends.links import icon_work
        icon_lines = icon_work(prep)[1]  # the link selections' icons too
        cache = _plan_cache(prep, args.cache_dir) if args.cache_dir or args.with_cache else None
        if cache is None:
            print(prep.plan.explain(icon_lines=icon_lines))
        else:
            from interpgram.backends.execute.executor import preview
            from interpgram.backends.pipeline import load_spec_inputs
            to_run, status = preview(prep.plan, prep.model, load_spec_inputs(prep), cache=cache,
                                     base_dir=prep.loaded.base_dir, allow_code=prep.allow_code)
            print(prep.plan.explain(status, to_run=to_run, icon_lines=icon_lines))
            print(f"  cache folder: {cache.root}")
    return 0


def _plan_cache(prep, cache_dir):
    """The result cache `interpgram render` would use (None: the spec turns it off)."""
    from interpgram.backends.pipeline import make_cache
    cache = make_cache(prep, cache_dir)
    return cache if cache.enabled else None


def cmd_render(args) -> int:
    from tqdm import tqdm

    from interpgram.backends.pipeline import cache_source, render

    bars: list = []  # created on the first report of work, so a fully cached render shows none

    def progress(stage: str, done: int, total: int) -> None:
        # one bar per kind of work: passes, NMF, each batch of icons, each activation grid
        if not bars or bars[-1].total != total or done < bars[-1].n:
            if bars:
                bars[-1].close()
            unit = ("step" if ("icons" in stage or "grid" in stage) else
                    "image" if ("examples" in stage or "atlas collection" in stage) else "pass")
            bars.append(tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, disable=args.quiet, leave=False))
        bar = bars[-1]
        bar.n = done
        bar.set_description(stage, refresh=False)
        bar.refresh()

    if _cache_limit(args) is False:
        return 2
    cache = False if args.no_cache else (_cache_dir(args.cache_dir) if args.cache_dir else None)
    try:
        path, prep, results = render(args.spec, args.out, allow_code=args.allow_code, cache=cache, progress=progress,
                                     icon_steps=args.icon_steps, export=tuple(args.export),
                                     cache_max_size=args.cache_max_size)
    finally:
        for bar in bars:
            bar.close()
    st = results.stats
    print(f"wrote {path.resolve()}")
    if set(args.export) & {"svg", "png"}:
        n = len(list((path.parent / "figures").glob("*")))
        print(f"  figures: {n} file(s) in {(path.parent / 'figures').resolve()}")
    if "npz" in args.export:
        from interpgram.backends.render.export import NUMBERS_FILE
        print(f"  numbers: every element's, with their labels, in {(path.parent / NUMBERS_FILE).resolve()}")
    print(f"  {len(prep.loaded.spec.elements)} elements · {st.forward_passes} forward / {st.backward_passes} backward "
          f"passes computed · cache {st.cache_hits} hits, {st.cache_misses} misses · device {results.device}")
    rc = prep.cache
    if rc is not None and rc.degraded:
        print(f"  cache: {rc.degraded}")
    ls = prep.link_stats  # the link selections' own computation (their icons too)
    icons, cached = st.icons_rendered + (ls.icons_rendered if ls else 0), st.icons_cached + (ls.icons_cached if ls else 0)
    grids, gcached = st.grids_rendered + (ls.grids_rendered if ls else 0), st.grids_cached + (ls.grids_cached if ls else 0)
    if icons or cached or grids or gcached:
        src = cache_source(rc)
        print(f"  icons: {icons} rendered, {cached} {src}"
              + (f" ({ls.icons_rendered} rendered, {ls.icons_cached} {src} for link selections)"
                 if ls and (ls.icons_rendered or ls.icons_cached) else "")
              + (f" · activation grids: {grids} rendered, {gcached} {src}" if grids or gcached else ""))
    return 0


def cmd_serve(args) -> int:
    from interpgram.backends.serve import serve

    if _cache_limit(args) is False:  # $INTERPGRAM_CACHE_MAX_SIZE that is not a size
        return 2
    return serve(args.spec, host=args.host, port=args.port, allow_code=args.allow_code, cache_dir=args.cache_dir,
                 icon_steps=args.icon_steps, show=not args.no_show, input_root=args.input_root)


def _folder(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder" + ("" if Path(text).exists() else " (not found)"))
    return text


def _cache_dir(text: str) -> Path:
    """``--cache-dir``: a relative folder is relative to the current directory (like ``-o``)."""
    return Path(text).expanduser().absolute()


def _size(text: str):
    from interpgram.backends.execute.cache import parse_size
    try:
        return parse_size(text, what="--cache-max-size") or text
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--cache-max-size: ")) from None


def _cache_limit(args):
    """The size limit the command uses (None: no limit), or False after printing why
    $INTERPGRAM_CACHE_MAX_SIZE is not a size."""
    from interpgram.backends.execute.cache import default_max_bytes, parse_size
    if getattr(args, "cache_max_size", None) is not None:
        return parse_size(args.cache_max_size)
    try:
        return default_max_bytes()
    except ValueError as e:
        _err(f"error: {e}")
        return False


def cmd_cache(args) -> int:
    from datetime import datetime

    from interpgram.backends.execute.cache import MAX_SIZE_ENV, ResultCache, format_size
    limit = _cache_limit(args)
    if limit is False:
        return 2
    cache = ResultCache(_cache_dir(args.cache_dir) if args.cache_dir else None, max_bytes=limit)
    if args.action == "clear":
        if not cache.root.is_dir():
            print(f"{cache.root}: nothing to clear (no cache there)")
            return 0
        before = cache.info()
        n = cache.clear()
        print(f"cleared {cache.root}: {n} item(s), {format_size(before['bytes'])} freed")
        return 0
    i = cache.info()
    src = ("--cache-max-size" if args.cache_max_size is not None else
           f"${MAX_SIZE_ENV}" if os.environ.get(MAX_SIZE_ENV, "").strip() else "default; --cache-max-size or $" + MAX_SIZE_ENV)
    print(f"cache: {i['root']}" + ("" if i["exists"] else " (does not exist yet)"))
    print(f"  entries: {i['entries']} ({format_size(i['entry_bytes'])})")
    print(f"  atlas collections: {i['atlas_stores']} ({format_size(i['atlas_bytes'])})")
    print(f"  size: {format_size(i['bytes'])} of {format_size(i['max_bytes'])} ({src})"
          + (" — over the limit: the next write evicts the least recently used" if i["max_bytes"] is not None
             and i["bytes"] > i["max_bytes"] else ""))
    if i["oldest_ns"] is not None:
        fmt = lambda ns: datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M")  # noqa: E731
        print(f"  least recently used: {fmt(i['oldest_ns'])} · most recently used: {fmt(i['newest_ns'])}")
    if i["corrupt_kept"] or i["tmp_files"]:
        print(f"  damaged entries kept for inspection: {i['corrupt_kept']} · leftover temporary files: {i['tmp_files']}")
    return 0


def _formats(text: str) -> tuple[str, ...]:
    out = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in out if f not in ("svg", "png", "npz")]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"formats are svg and png (figures) and npz (numbers), comma-separated, not {text!r}")
    return out


def _load_model(args):
    """The model named on the command line, or None after printing why it cannot load."""
    from interpgram.backends.models import ModelSourceError, load_model
    try:
        return load_model(args.model, weights=args.weights, factory=args.factory, labels=args.labels,
                          allow_code=args.allow_code, base_dir=args.base_dir)
    except ModelSourceError as e:
        hint = ("" if args.base_dir or "cannot import" not in str(e) else
                " — on the command line python: modules, weights and labels resolve from the current folder "
                "(a spec resolves them from its own folder): run it there, or pass --base-dir DIR")
        _err(f"error: {e}{hint}")
        return None


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def network_prefix(layers) -> str:
    """The module that holds the network when the model wraps it: the end of the chain of modules
    that are each their parent's only child and have children themselves ('' when the top level
    has several modules). ``interpgram layers`` lists that module's children."""
    prefix = ""
    while True:
        kids = [n for n in layers if _parent(n) == prefix]
        if len(kids) != 1 or not any(n.startswith(kids[0] + ".") for n in layers):
            return prefix
        prefix = kids[0]


def _listed(name: str, prefix: str, layers=()) -> bool:
    """A layer of the default listing: a child of ``prefix``, or a wrapper on the way down to it. A module
    that returns no tensor (a ModuleList, a Hugging Face model whose forward returns a ModelOutput) is no
    layer, so its children are listed in its place."""
    if prefix == name or prefix.startswith(name + "."):
        return True
    parent = _parent(name)
    while parent != prefix and parent not in layers and parent.startswith(prefix + "." if prefix else ""):
        parent = _parent(parent)
    return parent == prefix


def cmd_layers(args) -> int:
    model = _load_model(args)
    if model is None:
        return 1
    layers = model.layers()
    width = max(len(n) for n in layers) if layers else 10
    print(f"{model.name}: input {tuple(model.preprocess.size)} · {len(model.classes)} classes · "
          f"{len(layers)} layers (module path, output shape per image)")
    print(f"  preprocessing: {model.preprocess.describe()}")
    print(f"  {'input':<{width}}  {(3, *model.preprocess.size)}")
    prefix = network_prefix(layers)  # a wrapped model: the modules of the network it wraps
    for name, shape in layers.items():
        if args.all or _listed(name, prefix, layers):
            print(f"  {name:<{width}}  {shape}")
    print(f"  {'output':<{width}}  ({len(model.classes)},)")
    if not args.all and prefix:
        print(f"  ({prefix!r} holds the whole network, so its modules are listed)")
    if not args.all and any(not _listed(n, prefix, layers) for n in layers):
        print("  (submodules hidden; --all lists every module path)")
    if any("@" in n for n in layers):
        print("  (NAME@N: the N-th call of a module the forward pass calls more than once; a spec names one call)")
    return 0


def cmd_sprites(args) -> int:
    from tqdm import tqdm

    from interpgram.backends.execute.cache import ResultCache
    from interpgram.backends.kernels.optvis import Icon, IconSettings, IconStats, render_icons

    model = _load_model(args)
    if model is None:
        return 1
    layers = model.layers()
    if args.layer not in layers:
        from interpgram.grammar import did_you_mean
        _err(f"error: unknown layer {args.layer!r} in {model.name} {did_you_mean(args.layer, list(layers), listing='layers')}")
        return 1
    shape = layers[args.layer]
    if len(shape) not in (1, 3):
        _err(f"error: layer {args.layer!r} has output shape {shape}; sprites need channels (C,) or (C, H, W)")
        return 1
    n = shape[0]
    channels = list(range(n)) if not args.channels else args.channels
    bad = [c for c in channels if not 0 <= c < n]
    if bad:
        _err(f"error: channel {bad[0]} is outside {args.layer!r} ({n} channels: 0..{n - 1})")
        return 1
    from interpgram.backends.pipeline import model_info
    from interpgram.grammar.compile.vocab import STANDARD_TRANSFORMS
    info = model_info(model)  # the spec's defaults: a model that takes only its own size gets that size
    fixed = not info.reaches(info.small_icon_size, args.layer)
    side = int(model.preprocess.size[-1])
    size = args.size or (side if fixed else info.small_icon_size)
    transforms = [*STANDARD_TRANSFORMS, {"crop_or_pad": side}] if fixed and size == side else "standard"
    settings = IconSettings(size=size, steps=args.steps, attempts=args.attempts, transforms=transforms)
    limit = _cache_limit(args)
    if limit is False:
        return 2
    cache = ResultCache(_cache_dir(args.cache_dir) if args.cache_dir else None, max_bytes=limit)
    bar = tqdm(total=args.steps * args.attempts, unit="step", file=sys.stderr, disable=args.quiet, leave=False)

    def progress(stage: str, done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.set_description(stage, refresh=False)
        bar.refresh()

    if args.out:  # an unwritable sheet location fails now, not after the optimisation
        from interpgram.backends.files import check_output_dir
        check_output_dir(Path(args.out).parent)
    stats = IconStats()
    try:
        results = render_icons(model, [Icon(args.layer, "channel", index=c) for c in channels], settings, seed=args.seed,
                               cache=cache, batch_size=args.batch_size, progress=progress, stats=stats)
    finally:
        bar.close()
    print(f"{model.name} {args.layer}: {len(channels)} channel icons ({size} px, {args.steps} steps × {args.attempts}) · "
          f"{stats.rendered} rendered in {stats.seconds:.1f} s, {stats.cached} from the cache ({cache.root})")
    if args.out:
        import io
        import math

        import numpy as np
        from PIL import Image

        from interpgram.backends.files import atomic_write
        cols = args.columns or math.ceil(math.sqrt(len(results)))
        rows = math.ceil(len(results) / cols)
        pad = 2
        sheet = np.ones((rows * (size + pad) + pad, cols * (size + pad) + pad, 3), dtype=np.float32)
        for i, r in enumerate(results):
            y, x = divmod(i, cols)
            img = r.images[0].permute(1, 2, 0).numpy()
            sheet[pad + y * (size + pad):pad + y * (size + pad) + size, pad + x * (size + pad):pad + x * (size + pad) + size] = img
        buf = io.BytesIO()
        Image.fromarray((np.clip(sheet, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
        out = atomic_write(Path(args.out), buf.getvalue())
        print(f"wrote {out.resolve()} ({cols}×{rows} icons, channel i at row i // {cols}, column i % {cols})")
    return 0


def cmd_schema(args) -> int:
    from interpgram.grammar import json_schema
    print(json.dumps(json_schema(), indent=2))
    return 0


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: use at least 1")
    return n


# --cache-dir of the commands that read a spec (render, serve, plan): what make_cache does
CACHE_DIR_HELP = ("result cache folder, relative to the current folder (default: the spec's execution.cache — "
                  "true, its default, is $INTERPGRAM_CACHE or ~/.cache/interpgram/results; a folder there is "
                  "relative to the spec's folder; false keeps no cache)")


def _model_options(s: argparse.ArgumentParser) -> None:
    """The spec's model keys, on the command line (layers, sprites)."""
    s.add_argument("--weights", help="weights file for the model (model.weights in a spec)")
    s.add_argument("--factory", metavar="python:MODULE:CALLABLE",
                   help="builds the architecture a state_dict --weights or file: loads into (model.factory; needs --allow-code)")
    s.add_argument("--labels", help="text file with one class name per line (model.labels)")
    s.add_argument("--base-dir", metavar="DIR", help="where python: modules, weights and labels resolve (default: the "
                                                     "current folder; a spec resolves them from its own folder)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interpgram", description="A declarative grammar of interpretability for PyTorch models.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from importlib.metadata import PackageNotFoundError, version
    try:
        p.add_argument("--version", action="version", version=f"interpgram {version('interpgram')}")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
        pass
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def spec_cmd(name, help_, fn):
        s = sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        s.add_argument("spec", help="path to a YAML spec")
        s.add_argument("--allow-code", action="store_true", help="allow code to run: python: models, factories and data sets, TorchScript archives")
        s.set_defaults(fn=fn)
        return s

    spec_cmd("check", "validate a spec and its layer and class names against the model", cmd_check)
    pl = spec_cmd("plan", "print the fused plan: passes, ops and estimated tensor memory", cmd_plan)
    pl.add_argument("--json", action="store_true", help="the plan's ops as JSON")
    pl.add_argument("--cache-dir", help="also say which ops this result cache folder holds and what is left to run "
                                        "(relative to the current folder)")
    pl.add_argument("--with-cache", action="store_true",
                    help="the same against the cache `interpgram render` would use (the spec's execution.cache)")
    r = spec_cmd("render", "compute the interface and write a self-contained report", cmd_render)
    r.add_argument("-o", "--out", default="report", help="output folder (default: report)")
    r.add_argument("--no-cache", action="store_true", help="recompute everything and write nothing to the cache")
    r.add_argument("--cache-dir", "--cache", dest="cache_dir", help=CACHE_DIR_HELP)
    r.add_argument("--cache-max-size", type=_size, metavar="SIZE",
                   help="size limit of the cache, e.g. 500M, 2G, none (default 2G or $INTERPGRAM_CACHE_MAX_SIZE); "
                        "the least recently used results go first")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.add_argument("--icon-steps", type=_positive, metavar="N",
                   help="optimise every icon and activation grid for N steps instead of the spec's (a quick draft)")
    r.add_argument("--export", type=_formats, default=(), metavar="svg,png,npz",
                   help="also write every element's figure to OUT/figures/<element>.svg / .png (for papers); "
                        "npz: every element's numbers with their labels to OUT/numbers.npz")

    sv = spec_cmd("serve", "serve a live dashboard of the spec: class and input pickers, live links, reload on edit",
                  cmd_serve)
    sv.add_argument("--port", type=int, default=5006, help="port (default 5006; 0 picks a free one)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface, "
                         "which prints a warning: the dashboard has no login)")
    sv.add_argument("--cache-dir", help=CACHE_DIR_HELP)
    sv.add_argument("--icon-steps", type=_positive, metavar="N",
                    help="optimise every icon and activation grid for N steps instead of the spec's (a quick draft)")
    sv.add_argument("--no-show", action="store_true", help="do not open a browser tab")
    sv.add_argument("--input-root", type=_folder, metavar="DIR",
                    help="the only folder whose images the page's input box may open; typed paths are relative to it "
                         "(default: the spec's folder)")

    la = sub.add_parser("layers", help="list a model's addressable layers and output shapes")
    la.add_argument("model", help="builtin:shapes-cnn, inceptionv1, torchvision:NAME, timm:NAME, file:PATH, python:MOD:FN")
    _model_options(la)
    la.add_argument("--all", action="store_true", help="list every module path (default: the top-level modules, or "
                                                       "those of the network a wrapper module holds)")
    la.add_argument("--allow-code", action="store_true", help="allow code to run: python: models, factories and data sets, TorchScript archives")
    la.set_defaults(fn=cmd_layers)

    sp = sub.add_parser("sprites", help="render and cache the feature visualisation of every channel of a layer",
                        description="Render the icon of every channel of LAYER once and cache each icon, so that "
                                    "semantic dictionaries and channel bars in any spec reuse them (same size, steps, "
                                    "attempts and seed as the spec's icons: the defaults match).")
    sp.add_argument("model", help="builtin:shapes-cnn, inceptionv1, torchvision:NAME, timm:NAME, file:PATH, python:MOD:FN")
    sp.add_argument("layer", help="a layer with channels, e.g. conv4 or mixed4d")
    sp.add_argument("-o", "--out", help="also write a sprite sheet PNG here")
    sp.add_argument("--channels", type=int, nargs="+", help="only these channels (default: all)")
    sp.add_argument("--size", type=_positive, help="icon side in px (default: the model's input size, at most 128; "
                                                 "the input size for a model that takes no other)")
    sp.add_argument("--steps", type=_positive, default=256, help="optimisation steps (default 256)")
    sp.add_argument("--attempts", type=_positive, default=1, help="attempts per icon, the best is kept (default 1)")
    sp.add_argument("--seed", type=int, default=0, help="seed (default 0, as execution.seed in specs)")
    sp.add_argument("--batch-size", type=_positive, help="icons per optimisation (default: all, halved on out-of-memory)")
    sp.add_argument("--columns", type=int, help="icons per row of the sheet (default: square)")
    _model_options(sp)
    sp.add_argument("--cache-dir", help="result cache folder (default: $INTERPGRAM_CACHE or ~/.cache/interpgram/results)")
    sp.add_argument("--cache-max-size", type=_size, metavar="SIZE", help="size limit of the cache (default 2G)")
    sp.add_argument("--allow-code", action="store_true", help="allow code to run: python: models, factories and data sets, TorchScript archives")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(fn=cmd_sprites)

    ca = sub.add_parser("cache", help="the result cache: where it is, what it holds (info) or empty it (clear)",
                        description="info: the cache's folder, entries, atlas collections, size and limit. "
                                    "clear: delete every cached result and atlas collection.")
    ca.add_argument("action", choices=("info", "clear"))
    ca.add_argument("--cache-dir", help="the cache folder (default: $INTERPGRAM_CACHE or ~/.cache/interpgram/results)")
    ca.add_argument("--cache-max-size", type=_size, metavar="SIZE", help="the limit to report (default 2G)")
    ca.set_defaults(fn=cmd_cache)

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
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return args.fn(args)
    except SpecError as e:
        _err(str(e))
        n = len(e.diagnostics)
        _err(f"{n} problem{'s' if n != 1 else ''} found")
        return 1
    except KeyboardInterrupt:
        _err("interrupted; nothing half-written was left behind (an atlas collection resumes where it stopped)")
        return 130
    except Exception as e:  # errors whose message says what to do: no traceback for them
        from interpgram.backends.execute.engines import EngineError
        from interpgram.backends.kernels.atlas.run import AtlasError
        from interpgram.backends.kernels.atlas.store import StoreError
        from interpgram.backends.data.inputs import InputError
        from interpgram.backends.files import OutputError
        if isinstance(e, (AtlasError, EngineError, StoreError, InputError, OutputError)):
            _err(f"error: {e}")
            return 1
        raise
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
