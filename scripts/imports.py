"""Check that imports between Walle's packages point one way, and list them.

Also refuses import cycles between modules (lazy imports included), which hide a wrong
direction inside one package.

The packages form layers, lowest first. A module may import its own package and any lower
one; an import of a higher package (at the top of a file or inside a function, "lazy") is a
violation unless it is listed in EXCEPTIONS with the reason it is allowed. Tests, migrations
and management commands are checked too: they are code a maintainer reads.

    python scripts/imports.py            # check; exit 1 on a violation or a stale exception
    python scripts/imports.py --list     # also print every cross-package import edge
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A layer is a list of module prefixes (the longest prefix decides). The device
# runtime knows nothing of the server; walle_web's small libraries (settings readers, query
# parameters, list filters, time ranges, statistics, the REST parser and throttles) import
# only Django and the protocol, so every app's API may use them; the rest of walle_web
# (settings, URLs, the server process) sits on top of every app.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("walle_device", ("walle_device",)),
    (
        "walle_web libraries",
        (
            "walle_web.env",
            "walle_web.params",
            "walle_web.filters",
            "walle_web.timerange",
            "walle_web.stats",
            "walle_web.rest",
        ),
    ),
    ("accounts", ("accounts",)),
    ("tasks", ("tasks",)),
    ("devices", ("devices",)),
    ("releases", ("releases",)),
    ("alerts", ("alerts",)),
    ("console", ("console",)),
    ("walle_web", ("walle_web",)),
]
PACKAGES = sorted({p.split(".")[0] for _, prefixes in LAYERS for p in prefixes})
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
# Tests drive the whole stack (an app's websocket tests go through walle_web.asgi): a module
# in a `tests` package may import any layer.
TESTS = "tests"

# (importing module, imported layer): why this upward import is allowed for now.
EXCEPTIONS: dict[tuple[str, str], str] = {}

SKIP_DIRS = {".venv", "var", "build", "node_modules", "__pycache__"}


def layer_of(module: str) -> str | None:
    """The layer of a module: the one with the longest matching prefix, or None (not ours)."""
    best, length = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = name, len(prefix)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, current: str, is_package: bool) -> list[tuple[str, int]]:
    """Every module a file imports (absolute names), with the line, lazy imports included."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = current.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            # `from a import b` may import the module a.b: name each imported name in full.
            out.extend((f"{name}.{alias.name}", node.lineno) for alias in node.names)
    return out


def python_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        if not (ROOT / package).is_dir():
            continue
        for path in sorted((ROOT / package).rglob("*.py")):
            if not SKIP_DIRS.intersection(path.relative_to(ROOT).parts):
                files.append(path)
    return files


def edges() -> list[tuple[str, str, str, int]]:
    """(importing module, its layer, imported layer, line) for every cross-layer import."""
    found = []
    for path in python_files():
        current = module_name(path)
        source = layer_of(current)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, line in imported_modules(tree, current, path.name == "__init__.py"):
            target = layer_of(name)
            if target and source and target != source:
                found.append((current, source, target, line))
    return found


def module_cycles() -> list[list[str]]:
    """Groups of modules that import each other in a circle, lazy imports included (tests and
    migrations left out): each is a knot a maintainer has to hold in mind at once."""
    files = [
        p
        for p in python_files()
        if not {TESTS, "migrations"}.intersection(module_name(p).split("."))
    ]
    known = {module_name(p) for p in python_files()}
    graph: dict[str, set[str]] = {}
    for path in files:
        current = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        deps = set()
        for name, _ in imported_modules(tree, current, path.name == "__init__.py"):
            while name and name not in known:  # a.b.Name -> a.b
                name = name.rpartition(".")[0]
            if name and name != current:
                deps.add(name)
        graph[current] = deps
    # Tarjan's strongly connected components, iteratively (no recursion limit to meet).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
    return cycles


def main(argv: list[str] | None = None) -> int:
    global ROOT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every cross-package import")
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree to check (tests)")
    args = parser.parse_args(argv)
    ROOT = args.root.resolve()
    found = edges()
    violations = []
    used = set()
    for module, source, target, line in found:
        if RANK[target] > RANK[source] and TESTS not in module.split("."):
            key = (module, target)
            if key in EXCEPTIONS:
                used.add(key)
            else:
                violations.append(f"{module}:{line} imports {target} (above {source})")
    if args.list:
        summary: dict[tuple[str, str, str], int] = defaultdict(int)
        for module, source, target, _ in found:
            if RANK[target] < RANK[source]:
                kind = "->"
            elif TESTS in module.split("."):
                kind = "-> (tests)"
            else:
                kind = "-> (exception)"
            summary[(source, target, kind)] += 1
        print("cross-layer imports, importer -> imported: count")
        order = sorted(summary.items(), key=lambda kv: (RANK[kv[0][0]], RANK[kv[0][1]]))
        for (source, target, kind), n in order:
            print(f"  {source:20} {kind:15} {target:20} {n}")
    for cycle in module_cycles():
        violations.append(f"import cycle: {' <-> '.join(cycle)}")
    stale = sorted(set(EXCEPTIONS) - used)
    for module, target in stale:
        violations.append(f"exception no longer needed: {module} -> {target} (remove it)")
    for problem in violations:
        print(problem, file=sys.stderr)
    if violations:
        print(
            f"{len(violations)} problem(s) with the layers {' < '.join(RANK)}: move the "
            "code down, or let the lower package expose a hook the higher one registers",
            file=sys.stderr,
        )
        return 1
    print(f"imports point one way: {' < '.join(RANK)} ({len(found)} cross-layer imports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
