"""The largest files and functions of grammar/ and backends/: lines, and a rough cyclomatic count
(branches + boolean operators + 1).

    python scripts/code_sizes.py .
"""
import ast, sys
from pathlib import Path
root = Path(sys.argv[1])
files = [p for d in ("grammar", "backends") for p in (root / d).rglob("*.py")]
sizes = sorted(((len(p.read_text().splitlines()), str(p.relative_to(root))) for p in files), reverse=True)
print("largest files:", ", ".join(f"{f} {n}" for n, f in sizes[:6]))
funcs = []
def cc(node):
    n = 1
    for x in ast.walk(node):
        if isinstance(x, (ast.If, ast.For, ast.While, ast.IfExp, ast.ExceptHandler, ast.With, ast.AsyncFor, ast.comprehension)):
            n += 1
        elif isinstance(x, ast.BoolOp):
            n += len(x.values) - 1
    return n
for p in files:
    t = ast.parse(p.read_text())
    for node in ast.walk(t):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            funcs.append((node.end_lineno - node.lineno + 1, cc(node), f"{p.relative_to(root)}:{node.name}"))
print("longest functions:", ", ".join(f"{f} {n} lines (cc {c})" for n, c, f in sorted(funcs, reverse=True)[:5]))
print("most complex:", ", ".join(f"{f} cc {c}" for n, c, f in sorted(funcs, key=lambda x: -x[1])[:5]))
