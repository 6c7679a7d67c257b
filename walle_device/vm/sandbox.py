"""Load-time half of the task sandbox: parse, check and compile a task's Python files.

The checker is an allow-list by construction (the lists are data in `policy.py`): every
AST node whose type is not listed is refused, every dunder name, class-body definition and
special method that is not listed is refused, imports and module members must be listed,
and public attribute names are checked against the blocked families (frames, code,
generators' internals). Match statements are checked completely: keyword and value
patterns name their attributes in the source, and positional class patterns are allowed
only on the builtin types that match the subject itself, which the checker points at the
real builtin. Loads of a few attributes whose meaning depends on the object (`x.format`,
`x.format_map`, `x.obj`) are rewritten into calls of the guest's getattr, so a format
string cannot do a lookup the checker would have refused.

The run-time half (`guest.py`: restricted builtins and types, module proxies, safe
getattr, an audit hook) does not rely on this check: each layer holds on its own for
what it covers. See docs/task-authoring.md.
"""

from __future__ import annotations

import ast
import marshal
from collections.abc import Mapping
from dataclasses import dataclass

from . import policy

MAX_SOURCE_BYTES = 1 << 20
RESERVED_PREFIX = "_walle"


class SandboxViolation(Exception):
    """A task's source uses something the sandbox refuses; the message names file and line."""


@dataclass(frozen=True)
class CompiledTask:
    """A checked task: marshal'ed code per module name plus sources for tracebacks."""

    codes: dict[str, bytes]
    sources: dict[str, str]


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def attr_allowed(name: str) -> bool:
    """The attribute rule, shared with the guest's getattr (which reads the same data)."""
    if name.startswith("_"):
        return name in policy.READABLE_DUNDERS or name in policy.SAFE_PRIVATE
    return name not in policy.BLOCKED_ATTRS and not name.startswith(policy.BLOCKED_ATTR_PREFIXES)


def module_spec(name: str, requires: frozenset[str]) -> object:
    """What a task may see of module `name` ("*" or a set of names), or None if refused."""
    spec = policy.ALLOWED_MODULES.get(name) or policy.ENGINE_MODULES.get(name)
    if spec is None and "numpy" in requires:
        spec = policy.NUMPY_MODULES.get(name)
    return spec


def _allowed_import(name: str, requires: frozenset[str]) -> bool:
    return name == "walle" or module_spec(name, requires) is not None


def _public_name_tuple(node: ast.expr) -> bool:
    """A literal tuple/list of public attribute names, as __slots__/__match_args__ need."""
    return isinstance(node, ast.Tuple | ast.List) and all(
        isinstance(e, ast.Constant)
        and type(e.value) is str
        and e.value.isidentifier()
        and not e.value.startswith("_")
        and attr_allowed(e.value)
        for e in node.elts
    )


class _Checker(ast.NodeTransformer):
    """Walks one file's AST, refusing what the policy does not list and rewriting guarded
    loads and builtin class patterns."""

    def __init__(self, filename: str, local_modules: frozenset[str], requires: frozenset[str]):
        self.filename = filename
        self.local_modules = local_modules
        self.requires = requires
        self.methods: set[int] = set()

    def refuse(self, node: ast.AST, why: str) -> SandboxViolation:
        line = getattr(node, "lineno", "?")
        return SandboxViolation(f"{self.filename}:{line}: {why}")

    # ---- the node allow-list: every node passes through here
    def visit(self, node: ast.AST) -> ast.AST:
        kind = type(node).__name__
        if kind not in policy.AST_NODES:
            raise self.refuse(node, self._why_not(node))
        return super().visit(node)

    @staticmethod
    def _why_not(node: ast.AST) -> str:
        if isinstance(node, ast.AsyncFunctionDef | ast.AsyncFor | ast.AsyncWith | ast.Await):
            return "async code is not supported in tasks (there is no event loop)"
        if isinstance(node, ast.TypeAlias | ast.TypeVar | ast.ParamSpec | ast.TypeVarTuple):
            return "type aliases and type parameters ('type X = ...', 'def f[T]()') are not supported in tasks"
        return f"{type(node).__name__} syntax is not allowed in tasks"

    # ---- names and bindings
    def _check_binding(self, node: ast.AST, name: str | None, what: str = "name") -> None:
        if name is None:
            return
        if name.startswith(RESERVED_PREFIX):
            raise self.refuse(node, f"the name {name!r} is reserved")
        if is_dunder(name):
            raise self.refuse(node, f"the {what} {name!r} is not allowed in tasks")

    def visit_Name(self, node: ast.Name) -> ast.AST:
        name = node.id
        if name in policy.BLOCKED_BUILTINS:
            raise self.refuse(node, f"{name} is not available in tasks")
        if name.startswith(RESERVED_PREFIX):
            raise self.refuse(node, f"the name {name!r} is reserved")
        if name.startswith("__") and not (
            name in policy.READABLE_NAMES and isinstance(node.ctx, ast.Load)
        ):
            raise self.refuse(node, f"the name {name!r} is not allowed in tasks")
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        self._check_binding(node, node.arg, "parameter name")
        self.generic_visit(node)
        return node

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        if node.arg is not None and node.arg.startswith("__"):
            raise self.refuse(node, f"the keyword argument {node.arg!r} is not allowed")
        self.generic_visit(node)
        return node

    def visit_alias(self, node: ast.alias) -> ast.AST:
        self._check_binding(node, node.asname)
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        self._check_binding(node, node.name)
        self.generic_visit(node)
        return node

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> ast.AST:
        for name in node.names:
            if name.startswith("__") or name.startswith(RESERVED_PREFIX):
                raise self.refuse(node, f"the name {name!r} is not allowed in tasks")
        return node

    visit_Nonlocal = visit_Global  # type: ignore[assignment]

    # ---- attributes
    def _check_attr_name(self, node: ast.AST, name: str) -> None:
        if not attr_allowed(name):
            raise self.refuse(
                node,
                f"attribute {name!r} is not allowed in tasks (names starting "
                "with '_' and frame/code attributes are blocked)",
            )

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)  # innermost first, so the message names the first trick
        self._check_attr_name(node, node.attr)
        if not isinstance(node.ctx, ast.Load):
            if node.attr.startswith("_"):
                raise self.refuse(node, f"setting attribute {node.attr!r} is not allowed in tasks")
            # `x.attr = v` / `del x.attr`: the guest checks x first, so a task can set
            # attributes on its own objects and classes but never on a class other tasks
            # share (say collections.Counter.most_common).
            node.value = ast.copy_location(
                ast.Call(
                    func=ast.Name(id="_walle_store", ctx=ast.Load()),
                    args=[node.value],
                    keywords=[],
                ),
                node.value,
            )
            return node
        if node.attr in policy.GUARDED_ATTRS and isinstance(node.ctx, ast.Load):
            # e.g. str.format looks attributes up by name at run time: route the load
            # through the guest's getattr, which applies the rules to the actual object.
            call = ast.Call(
                func=ast.Name(id="_walle_attr", ctx=ast.Load()),
                args=[node.value, ast.Constant(node.attr)],
                keywords=[],
            )
            return ast.copy_location(call, node)
        return node

    # ---- functions and classes
    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        if id(node) not in self.methods:  # class-body names are checked by _class_stmt
            self._check_binding(node, node.name, "function name")
        self._check_yields(node.body, guarded=False)
        self.generic_visit(node)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self._check_binding(node, node.name, "class name")
        if node.keywords:
            raise self.refuse(
                node,
                "class keywords (metaclass=..., and the like) are not allowed in tasks",
            )
        for base in node.bases:
            if isinstance(base, ast.Starred):
                raise self.refuse(node, "computed base lists (*bases) are not allowed in tasks")
        for param in node.type_params:
            self.visit(param)  # refused: not in the node allow-list
        node.decorator_list = [self.visit(d) for d in node.decorator_list]  # type: ignore[misc]
        node.bases = [self.visit(b) for b in node.bases]  # type: ignore[misc]
        node.body = [self._class_stmt(stmt) for stmt in node.body]
        return node

    def _class_stmt(self, stmt: ast.stmt) -> ast.stmt:
        """A class body may define methods, attributes, nested classes and a docstring."""
        if isinstance(stmt, ast.FunctionDef):
            if stmt.name.startswith("_") and stmt.name not in policy.CLASS_METHODS:
                raise self.refuse(
                    stmt,
                    f"a task class may not define {stmt.name!r}: use public names, or one of "
                    "the special methods " + ", ".join(sorted(policy.CLASS_METHODS)),
                )
            self.methods.add(id(stmt))
            return self.visit(stmt)  # type: ignore[return-value]
        if isinstance(stmt, ast.ClassDef):
            return self.visit(stmt)  # type: ignore[return-value]
        if isinstance(stmt, ast.Pass) or (
            isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        ):
            return stmt
        if isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                if not isinstance(target, ast.Name):
                    raise self.refuse(
                        stmt, "a class body may only assign plain names (no unpacking)"
                    )
                self._check_class_attr(stmt, target.id, stmt.value)
            if stmt.value is not None:
                stmt.value = self.visit(stmt.value)  # type: ignore[assignment]
            if isinstance(stmt, ast.AnnAssign):
                stmt.annotation = self.visit(stmt.annotation)  # type: ignore[assignment]
            return stmt
        raise self.refuse(
            stmt,
            f"{type(stmt).__name__} is not allowed in a class body: a task class may only "
            "define methods, attributes, nested classes and a docstring",
        )

    def _check_class_attr(self, stmt: ast.stmt, name: str, value: ast.expr | None) -> None:
        if name.startswith(RESERVED_PREFIX):
            raise self.refuse(stmt, f"the name {name!r} is reserved")
        if not name.startswith("_"):
            return
        ok = False
        if name in ("__slots__", "__match_args__"):
            ok = value is not None and _public_name_tuple(value)
        elif name == "__hash__":
            ok = isinstance(value, ast.Constant) and value.value is None
        elif name == "__doc__":
            ok = isinstance(value, ast.Constant) and type(value.value) is str
        if not ok:
            raise self.refuse(
                stmt,
                f"a task class may not bind {name!r}; allowed: public names, "
                "__slots__/__match_args__ as a literal tuple of public names, "
                "__hash__ = None, __doc__",
            )

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

    # ---- pattern matching
    def visit_MatchClass(self, node: ast.MatchClass) -> ast.AST:
        for name in node.kwd_attrs:  # class patterns read these attributes by name
            self._check_attr_name(node, name)
            if name in policy.GUARDED_ATTRS:
                raise self.refuse(node, f"class patterns cannot match attribute {name!r}")
        cls = node.cls
        if isinstance(cls, ast.Name) and cls.id in policy.MATCH_SELF_TYPES:
            # `case int(x)` matches the subject itself; point it at the real builtin so
            # a task that rebound `int` cannot slip in a class with __match_args__.
            node.cls = ast.copy_location(
                ast.Attribute(
                    value=ast.Name(id="_walle_types", ctx=ast.Load()), attr=cls.id, ctx=ast.Load()
                ),
                cls,
            )
        elif node.patterns:
            raise self.refuse(
                node,
                "positional sub-patterns are allowed only for builtin types (int(x), "
                "str(s), ...): they read the class's __match_args__, which the sandbox "
                "cannot check; name the attributes instead, e.g. case Point(x=x, y=y)",
            )
        else:
            self.visit(cls)
        node.patterns = [self.visit(p) for p in node.patterns]  # type: ignore[misc]
        node.kwd_patterns = [self.visit(p) for p in node.kwd_patterns]  # type: ignore[misc]
        return node

    def visit_MatchAs(self, node: ast.MatchAs) -> ast.AST:
        self._check_binding(node, node.name)
        self.generic_visit(node)
        return node

    def visit_MatchStar(self, node: ast.MatchStar) -> ast.AST:
        self._check_binding(node, node.name)
        return node

    def visit_MatchMapping(self, node: ast.MatchMapping) -> ast.AST:
        self._check_binding(node, node.rest)
        self.generic_visit(node)
        return node

    # ---- imports
    def _check_import(self, node: ast.AST, name: str) -> None:
        top = name.split(".")[0]
        if top in self.local_modules and "." not in name:
            return
        if not _allowed_import(name, self.requires):
            raise self.refuse(
                node,
                f"import of {name!r} is not allowed in tasks; allowed: walle, walle_engine, "
                + ", ".join(sorted(policy.ALLOWED_MODULES))
                + " (numpy with config requires=['numpy'] and isolation='process')",
            )

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            self._check_import(node, alias.name)
            self.visit(alias)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.level:
            raise self.refuse(
                node,
                "relative imports are not allowed; import bundle modules by their top-level name",
            )
        module = node.module or ""
        self._check_import(node, module)
        spec = module_spec(module, self.requires)
        for alias in node.names:
            if alias.name == "*":
                raise self.refuse(node, "'import *' is not allowed in tasks")
            self._check_attr_name(node, alias.name)
            self.visit(alias)
            offered = alias.name in policy.SUBMODULES.get(module, ()) or (
                alias.name in spec if isinstance(spec, frozenset) else spec == "*"
            )
            if spec is not None and (
                not offered or alias.name in policy.DENIED_NAMES.get(module, ())
            ):
                raise self.refuse(
                    node, f"{module}.{alias.name} is not available in tasks (sandbox allowlist)"
                )
        return node


def check_source(
    source: str,
    filename: str,
    local_modules: frozenset[str] = frozenset(),
    requires: frozenset[str] = frozenset(),
) -> ast.Module:
    """Parse and check one task file; return the (rewritten) tree or raise SandboxViolation."""
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise SandboxViolation(f"{filename}: source is larger than {MAX_SOURCE_BYTES} bytes")
    try:
        tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError) as e:  # ValueError: NUL bytes in the source
        line = getattr(e, "lineno", "?")
        raise SandboxViolation(f"{filename}:{line}: syntax error: {getattr(e, 'msg', e)}") from None
    except RecursionError:
        raise SandboxViolation(f"{filename}: the source is nested too deeply") from None
    try:
        tree = _Checker(filename, local_modules, requires).visit(tree)
    except RecursionError:
        raise SandboxViolation(f"{filename}: the source is nested too deeply") from None
    return ast.fix_missing_locations(tree)


def compile_task(
    task_id: str, source: str, files: Mapping[str, bytes], requires: frozenset[str] = frozenset()
) -> CompiledTask:
    """Check and compile the entry script and every `*.py` bundle file it may import."""
    py_files = {
        name[:-3]: data
        for name, data in files.items()
        if name.endswith(".py")
        and "/" not in name
        and name[:-3].isidentifier()
        and not name.startswith("_")  # never a stand-in for "__task__", the entry script
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
        try:
            code = compile(tree, filename, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError) as e:
            raise SandboxViolation(f"{filename}: does not compile: {e}") from None
        codes[mod] = marshal.dumps(code)
        sources[filename] = text
    return CompiledTask(codes, sources)
