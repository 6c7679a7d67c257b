"""Load-time half of the task sandbox: parse, check and compile a task's Python files.

The check refuses, with the file and line, the syntax that reaches outside the task API:
imports outside the allowlist, the dynamic-code and introspection builtins, attribute
names starting with "_" (which lead to `__class__`, `__globals__`, `__subclasses__`, and
to private module state such as `random._os`), and the attribute names that lead to
frames and code objects; and code that would run after a run's budget is off (`__del__`,
`yield` inside try/with, async code). It also rewrites the loads of a few attributes whose
meaning depends on the object (`x.format`, `x.format_map`, `x.obj`) into calls of the
guest's getattr, so a format string cannot do a lookup the checker would have refused.
The runtime half (restricted builtins, module proxies, safe getattr) lives in `guest.py`.

This is defence in depth, not a security boundary: see docs/task-authoring.md.
"""

from __future__ import annotations

import ast
import marshal
from collections.abc import Mapping
from dataclasses import dataclass

from . import guest

# Dunder names a task may bind or read as plain names (module/class bodies).
SAFE_NAMES = frozenset(
    {
        "__name__",
        "__doc__",
        "__slots__",
        "__match_args__",
        "__hash__",
        "__all__",
        "__qualname__",
        "__module__",
    }
)
# ...of which these may only be read: a module's __name__ steers `from m import x`.
READ_ONLY_NAMES = frozenset({"__name__", "__qualname__", "__module__"})
BANNED_CALLS = frozenset(guest.BLOCKED_BUILTINS) | {"__import__", "__build_class__"}
# Special methods that would run outside the budget window (at garbage collection).
BANNED_DEFS = frozenset({"__del__"})
MAX_SOURCE_BYTES = 1 << 20


class SandboxViolation(Exception):
    """A task's source uses something the sandbox refuses; the message names file and line."""


@dataclass(frozen=True)
class CompiledTask:
    """A checked task: marshal'ed code per module name plus sources for tracebacks."""

    codes: dict[str, bytes]
    sources: dict[str, str]


def _allowed_import(name: str, requires: frozenset[str]) -> bool:
    return name == "walle" or guest.module_spec(name, requires) is not None


class _Checker(ast.NodeTransformer):
    """Walks one file's AST, refusing what the sandbox forbids and rewriting guarded loads."""

    def __init__(self, filename: str, local_modules: frozenset[str], requires: frozenset[str]):
        self.filename = filename
        self.local_modules = local_modules
        self.requires = requires

    def refuse(self, node: ast.AST, why: str) -> SandboxViolation:
        line = getattr(node, "lineno", "?")
        return SandboxViolation(f"{self.filename}:{line}: {why}")

    def _check_attr_name(self, node: ast.AST, name: str) -> None:
        if not guest.attr_allowed(name):
            raise self.refuse(
                node,
                f"attribute {name!r} is not allowed in tasks (names starting "
                "with '_' and frame/code attributes are blocked)",
            )

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)  # innermost first, so the message names the first trick
        self._check_attr_name(node, node.attr)
        if node.attr.startswith("_") and not isinstance(node.ctx, ast.Load):
            raise self.refuse(node, f"setting attribute {node.attr!r} is not allowed in tasks")
        if node.attr in guest.GUARDED_ATTRS and isinstance(node.ctx, ast.Load):
            # e.g. str.format looks attributes up by name at run time: route the load
            # through the guest's getattr, which applies the rules to the actual object.
            call = ast.Call(
                func=ast.Name(id="_walle_attr", ctx=ast.Load()),
                args=[node.value, ast.Constant(node.attr)],
                keywords=[],
            )
            return ast.copy_location(call, node)
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        name = node.id
        if name in BANNED_CALLS:
            raise self.refuse(node, f"{name} is not available in tasks")
        if (
            name.startswith("__")
            and name.endswith("__")
            and (
                name not in SAFE_NAMES
                or (name in READ_ONLY_NAMES and not isinstance(node.ctx, ast.Load))
            )
        ):
            raise self.refuse(node, f"the name {name!r} is not allowed in tasks")
        if name.startswith("_walle"):
            raise self.refuse(node, f"the name {name!r} is reserved")
        return node

    def _check_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        if node.name in BANNED_DEFS:
            raise self.refuse(node, f"defining {node.name} is not allowed in tasks")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self._check_def(node)
        self._check_yields(node.body, guarded=False)
        self.generic_visit(node)
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        raise self.refuse(node, "async code is not supported in tasks (there is no event loop)")

    def _check_yields(self, nodes: list[ast.stmt] | list[ast.AST], guarded: bool) -> None:
        # A generator dropped while suspended inside try/with runs its handlers, finally
        # or __exit__ when it is collected: possibly after the run's budget was disarmed,
        # during another task's run, or while the interpreter is being destroyed.
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
                continue  # checked on its own
            if isinstance(node, ast.Yield | ast.YieldFrom) and guarded:
                raise self.refuse(
                    node,
                    "yield inside try/with is not allowed in tasks: the generator's cleanup "
                    "could run outside the run's budget",
                )
            inner = guarded or isinstance(node, ast.Try | ast.TryStar | ast.With)
            self._check_yields(list(ast.iter_child_nodes(node)), inner)

    def visit_Await(self, node: ast.Await) -> ast.AST:
        raise self.refuse(node, "async code is not supported in tasks (there is no event loop)")

    def visit_arg(self, node: ast.arg) -> ast.AST:
        if node.arg.startswith("__") and node.arg.endswith("__"):
            raise self.refuse(node, f"the parameter name {node.arg!r} is not allowed")
        self.generic_visit(node)
        return node

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        if node.arg is not None and node.arg.startswith("__"):
            raise self.refuse(node, f"the keyword argument {node.arg!r} is not allowed")
        self.generic_visit(node)
        return node

    def visit_MatchClass(self, node: ast.MatchClass) -> ast.AST:
        for name in node.kwd_attrs:  # class patterns read these attributes by name
            self._check_attr_name(node, name)
            if name in guest.GUARDED_ATTRS:
                raise self.refuse(node, f"class patterns cannot match attribute {name!r}")
        self.generic_visit(node)
        return node

    def _check_import(self, node: ast.AST, name: str) -> None:
        top = name.split(".")[0]
        if top in self.local_modules and "." not in name:
            return
        if not _allowed_import(name, self.requires):
            raise self.refuse(
                node,
                f"import of {name!r} is not allowed in tasks; allowed: walle, walle_engine, "
                + ", ".join(sorted(guest.ALLOWED_MODULES))
                + " (numpy with config requires=['numpy'] and isolation='process')",
            )

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            self._check_import(node, alias.name)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.level:
            raise self.refuse(
                node,
                "relative imports are not allowed; import bundle modules by their top-level name",
            )
        module = node.module or ""
        self._check_import(node, module)
        spec = guest.module_spec(module, self.requires)
        for alias in node.names:
            if alias.name == "*":
                raise self.refuse(node, "'import *' is not allowed in tasks")
            self._check_attr_name(node, alias.name)
            offered = alias.name in guest.SUBMODULES.get(module, ()) or (
                alias.name in spec if isinstance(spec, set) else spec == "*"
            )
            if spec is not None and (
                not offered or alias.name in guest.DENIED_NAMES.get(module, ())
            ):
                raise self.refuse(
                    node, f"{module}.{alias.name} is not available in tasks (sandbox allowlist)"
                )
        return node

    def visit_Global(self, node: ast.Global) -> ast.AST:
        for name in node.names:
            if name.startswith("__"):
                raise self.refuse(node, f"the name {name!r} is not allowed in tasks")
        return node

    visit_Nonlocal = visit_Global  # type: ignore[assignment]


def check_source(
    source: str,
    filename: str,
    local_modules: frozenset[str] = frozenset(),
    requires: frozenset[str] = frozenset(),
) -> ast.Module:
    """Parse and check one task file; return the (rewritten) tree or raise SandboxViolation."""
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise SandboxViolation(f"{filename}: source is larger than {MAX_SOURCE_BYTES} bytes")
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as e:
        raise SandboxViolation(f"{filename}:{e.lineno}: syntax error: {e.msg}") from None
    tree = _Checker(filename, local_modules, requires).visit(tree)
    return ast.fix_missing_locations(tree)


def compile_task(
    task_id: str, source: str, files: Mapping[str, bytes], requires: frozenset[str] = frozenset()
) -> CompiledTask:
    """Check and compile the entry script and every `*.py` bundle file it may import."""
    py_files = {
        name[:-3]: data
        for name, data in files.items()
        if name.endswith(".py") and "/" not in name and name[:-3].isidentifier()
    }
    local = frozenset(py_files)
    units = {"__task__": (source, f"<task {task_id}>")}
    for mod, data in py_files.items():
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise SandboxViolation(f"{mod}.py is not UTF-8") from None
        units[mod] = (text, f"<task {task_id}/{mod}.py>")
    codes: dict[str, bytes] = {}
    sources: dict[str, str] = {}
    for mod, (text, filename) in units.items():
        tree = check_source(text, filename, local, requires)
        code = compile(tree, filename, "exec", dont_inherit=True)
        codes[mod] = marshal.dumps(code)
        sources[filename] = text
    return CompiledTask(codes, sources)
