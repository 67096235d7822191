"""How far a stage's config travels: the walk a reader takes following ``cfg`` from an entry point.

Starting at a function and one of its parameters (``specialists/train.py``'s ``train_specialist``
and its ``cfg``), every call that passes that parameter on (as an argument, positionally or by
keyword) is followed into the callee, which is walked the same way, depth first: the order in
which a reader who wants to know what the config does has to open files. The walk is read from
the source with ``ast`` (no import); a callee is found by name in its module, through the
module's ``from ... import`` lines, or as a class (its ``__init__``) or a class's method.
Printed per entry point:

- **files**: the distinct files the walk visits;
- **functions**: the functions that receive the whole config;
- **climbs down**: steps into a file of a lower layer (``core`` < ``data`` < ``generalist`` <
  ``clustering`` < ``specialists`` < ``inference`` < ``cli``) than the one the walk is in;
- **returns**: steps back into a file the walk had already left (each return from a callee in
  another file counts, as does entering a file opened before).

    python benchmarks/config_walk.py [--rev GIT_REVISION ...]

``--rev`` walks the source of earlier commits too (``git show REV:path``), side by side.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("core", "data", "generalist", "clustering", "specialists", "inference", "cli")
ENTRIES = (
    ("specialists/train.py", "train_specialist", "cfg"),
    ("generalist/train.py", "train_generalist", "cfg"),
    ("inference/distill.py", "distill", "cfg"),  # the config it builds
)


class Source:
    """The package's modules at one revision (None: the working tree), parsed on demand."""

    def __init__(self, rev: str | None):
        self.rev, self.trees = rev, {}

    def tree(self, path: str) -> ast.Module | None:
        if path not in self.trees:
            self.trees[path] = None
            try:
                if self.rev is None:
                    text = (ROOT / path).read_text()
                else:
                    text = subprocess.run(
                        ["git", "show", f"{self.rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
                    ).stdout
                self.trees[path] = ast.parse(text)
            except (OSError, subprocess.CalledProcessError, SyntaxError):
                pass
        return self.trees[path]

    def imports(self, path: str) -> dict[str, tuple[str, str]]:
        """Name -> (module file, name there) for the module's ``from X import name`` lines."""
        out = {}
        package = Path(path).parent
        for node in ast.walk(self.tree(path) or ast.Module(body=[], type_ignores=[])):
            if isinstance(node, ast.ImportFrom):
                base = _module_file(node.module, node.level, package)
                if base is None:
                    continue
                for a in node.names:
                    out[a.asname or a.name] = (base, a.name)
        return out

    def find(self, path: str, name: str) -> tuple[str, ast.FunctionDef] | None:
        """The function (or a class's ``__init__``, or ``Class.method`` as "Class.method") named
        ``name`` in module ``path``, following its imports."""
        tree = self.tree(path)
        if tree is None:
            return None
        cls, _, method = name.partition(".")
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                return path, node
            if isinstance(node, ast.ClassDef) and node.name == cls:
                want = method or "__init__"
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == want:
                        item.is_method = True
                        return path, item
                return None
        imported = self.imports(path).get(cls)
        if imported is not None and imported[0] != path:
            return self.find(imported[0], imported[1] + (f".{method}" if method else ""))
        return None


def _module_file(module: str | None, level: int, package: Path) -> str | None:
    if level:
        base = package
        for _ in range(level - 1):
            base = base.parent
        parts = [*base.parts, *(module.split(".") if module else [])]
    elif module and module.startswith("specens."):
        parts = module.split(".")[1:]
    else:
        return None
    file = "/".join(parts) + ".py"
    return file if (ROOT / file).exists() else None


def _callee(call: ast.Call) -> str | None:
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id.lstrip("_")[:1].isupper():
        return f"{f.value.id}.{f.attr}"  # Class.method
    return None


def _passed(call: ast.Call, name: str, fn: ast.FunctionDef) -> str | None:
    """The callee's parameter that receives ``name`` in ``call`` (None if it is not passed whole)."""
    params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    if getattr(fn, "is_method", False):
        params = params[1:]  # self or cls
    for i, arg in enumerate(call.args):
        if isinstance(arg, ast.Name) and arg.id == name and i < len(params):
            return params[i]
    for kw in call.keywords:
        if isinstance(kw.value, ast.Name) and kw.value.id == name and kw.arg is not None:
            return kw.arg
    return None


def walk(src: Source, path: str, fn: ast.FunctionDef, name: str, seq: list[str], seen: set) -> None:
    """Append the files of the walk from ``fn`` (in ``path``) following parameter ``name``."""
    key = (path, fn.name, fn.lineno, name)
    if key in seen:
        return
    seen.add(key)
    seq.append(path)
    calls = sorted((n for n in ast.walk(fn) if isinstance(n, ast.Call)), key=lambda n: (n.lineno, n.col_offset))
    for call in calls:
        target = _callee(call)
        found = src.find(path, target) if target else None
        if found is None:
            continue
        param = _passed(call, name, found[1])
        if param is not None:
            walk(src, found[0], found[1], param, seq, seen)
            seq.append(path)


def measure(src: Source, path: str, function: str, name: str) -> dict[str, int]:
    found = src.find(path, function)
    if found is None:
        return {}
    seq, seen = [], set()
    walk(src, found[0], found[1], name, seq, seen)
    steps = [(a, b) for a, b in zip(seq, seq[1:], strict=False) if a != b]
    returns, left = 0, set()
    for a, b in steps:
        left.add(a)
        returns += b in left
    layer = {p: LAYERS.index(p.split("/")[0]) if p.split("/")[0] in LAYERS else -1 for p in seq}
    return {
        "files": len(set(seq)),
        "functions": len(seen),
        "climbs down": sum(layer[b] < layer[a] for a, b in steps),
        "returns": returns,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", action="append", default=[], help="also walk this git revision's source")
    args = ap.parse_args()
    revs = [*args.rev, None]
    head = ["entry point", "revision", "files", "functions", "climbs down", "returns"]
    rows = []
    for path, function, name in ENTRIES:
        for rev in revs:
            m = measure(Source(rev), path, function, name)
            rows.append([f"{path}:{function}({name})", rev or "working tree", *(str(m.get(k, "")) for k in head[2:])])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
