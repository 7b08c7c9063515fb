"""The import graph of interpgram's own modules: cycles, back-arrows, private and relative imports,
function-local imports.

    python scripts/import_graph.py            # the figures and every finding
    python scripts/import_graph.py --check    # exit 1 on a cycle, a back-arrow or a private/relative import

Layers, lowest first: an arrow from a lower layer to a higher one is a back-arrow. ``grammar`` never
imports ``backends``; inside ``backends`` the pipeline runs one way (execute and kernels before
presentations and render; the front ends — pipeline, links, serve, cli — last). Function-local
imports count as edges too (they hide a cycle, they do not remove it).
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"grammar": "interpgram.grammar", "backends": "interpgram.backends"}

# module prefix -> layer (longest prefix wins); lower numbers may not import higher ones
LAYERS = [
    ("interpgram.grammar", 0),
    ("interpgram.backends.files", 1), ("interpgram.backends.code", 1),
    ("interpgram.backends.data", 2), ("interpgram.backends.models", 2),
    ("interpgram.backends.execute", 3), ("interpgram.backends.kernels", 3), ("interpgram.backends.attribution", 3),
    ("interpgram.backends.render", 4), ("interpgram.backends.presentations", 5),
    ("interpgram.backends.links", 6), ("interpgram.backends.pipeline", 6),
    ("interpgram.backends.serve", 7), ("interpgram.backends.cli", 8), ("interpgram.backends.api", 8),
    ("interpgram.backends.public", 9),
    ("interpgram.backends", 6),
    # the layout before the house (so the same script reads old checkouts): torch = execution, atlas and
    # view(s) above it, _files at the bottom
    ("interpgram.backends._files", 1), ("interpgram.backends.torch", 3), ("interpgram.backends.atlas", 4),
    ("interpgram.backends.view", 4), ("interpgram.backends.views", 4),
]


def layer_of(mod: str) -> int:
    best = max((p for p, _ in LAYERS if mod == p or mod.startswith(p + ".")), key=len, default=None)
    return dict(LAYERS)[best] if best else -1


def modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in PACKAGES.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            rel = f.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = f
    return out


def resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The interpgram module an import names (``from a.b import c`` may name module a.b.c)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def scan(mods: dict[str, Path]):
    edges: dict[str, set[str]] = defaultdict(set)
    local: list[tuple[str, int, str]] = []
    private: list[tuple[str, int, str]] = []
    relative: list[tuple[str, int]] = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(n) for n in tree.body}
        for node in tree.body:  # imports under `if TYPE_CHECKING:` at the top level count as top level
            if isinstance(node, ast.If):
                top_level |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # resolved against this module's package, so old code's graph can be read too
                    relative.append((mod, node.lineno))
                    base = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    module = f"{base}.{module}" if module else base
                names = [module + "." + a.name for a in node.names]
                for a in node.names:
                    if a.name.startswith("_") and module.startswith("interpgram"):
                        target = resolve(module, mods)
                        if target and target.rsplit(".", 1)[0] != mod.rsplit(".", 1)[0]:
                            private.append((mod, node.lineno, f"{module}.{a.name}"))
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for n in names:
                if not n.startswith("interpgram."):
                    continue
                target = resolve(n, mods)
                if target and target != mod:
                    edges[mod].add(target)
                    if id(node) not in top_level:
                        local.append((mod, node.lineno, target))
    return edges, local, private, relative


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def package_of(mod: str) -> str:
    """A module's package for "cycles between packages" (a package's __init__ re-exporting its own
    modules is not a cycle between packages)."""
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 on a cycle, a back-arrow or a private/relative import")
    args = ap.parse_args(argv)
    mods = modules()
    edges, local, private, relative = scan(mods)
    # a package __init__ importing its own modules (re-exports, import_folder) is not a dependency cycle
    dep = {m: {t for t in ts if not (mods[m].name == "__init__.py" and t.startswith(m + "."))} for m, ts in edges.items()}
    cyc = cycles(dep)
    back = sorted((m, t) for m, ts in dep.items() for t in ts if layer_of(t) > layer_of(m))
    n_edges = sum(len(t) for t in edges.values())
    print(f"{len(mods)} modules, {n_edges} import edges ({len(local)} function-local)")
    print(f"cycles: {len(cyc)}")
    for c in cyc:
        print("  " + " ↔ ".join(c))
    print(f"back-arrows (a lower layer importing a higher one): {len(back)}")
    for m, t in back:
        print(f"  {m} → {t}")
    print(f"private names imported across packages: {len(private)}")
    for m, line, name in private:
        print(f"  {m}:{line} {name}")
    print(f"relative imports: {len(relative)}")
    by_mod = defaultdict(int)
    for m, _, _ in local:
        by_mod[m] += 1
    print("function-local imports by module: " + (", ".join(f"{m.removeprefix('interpgram.')} {n}" for m, n in
                                                          sorted(by_mod.items(), key=lambda kv: -kv[1])) or "none"))
    bad = bool(cyc or back or private or relative)
    if args.check and bad:
        print("import graph check FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
