"""The task sandbox's allow-lists, as data: one source for the load-time checker
(`sandbox.py`, on the host) and the run-time layer (`guest.py`, inside every task
interpreter, which receives `as_data()` marshal'ed when it boots and imports nothing of
ours).

Everything here is an allow-list: an AST node type, a dunder name, a class-body definition,
a module, a module member, a builtin, an audit event or an attribute name that is not
listed is refused. Attribute names are `ATTRIBUTE_NAMES` (at the end of this file: the
public surface of what the policy offers, computed from the rest of this file by
`surface.py`, and reviewed as data) plus the names a task defines in its own source;
`BLOCKED_ATTRS` and `BLOCKED_ATTR_PREFIXES` (frames, code, generators' internals, raw
addresses, file writers) are refused whatever lists or defines them. See
docs/task-authoring.md, "The sandbox".
"""

from __future__ import annotations

from typing import Any

# ---------------------------------------------------------------- load-time checker
# AST node types a task may contain. Absent on purpose: async code (no event loop, and a
# coroutine's cleanup runs outside the budget), `type X = ...` aliases and PEP 695 type
# parameters (lazily evaluated hidden scopes the checker would have to model).
AST_NODES = frozenset(
    {
        # module, statements
        "Module",
        "Expr",
        "Assign",
        "AugAssign",
        "AnnAssign",
        "FunctionDef",
        "ClassDef",
        "Return",
        "Delete",
        "For",
        "While",
        "If",
        "With",
        "Raise",
        "Try",
        "TryStar",
        "Assert",
        "Import",
        "ImportFrom",
        "Global",
        "Nonlocal",
        "Pass",
        "Break",
        "Continue",
        "Match",
        # expressions
        "BoolOp",
        "NamedExpr",
        "BinOp",
        "UnaryOp",
        "Lambda",
        "IfExp",
        "Dict",
        "Set",
        "ListComp",
        "SetComp",
        "DictComp",
        "GeneratorExp",
        "Yield",
        "YieldFrom",
        "Compare",
        "Call",
        "FormattedValue",
        "JoinedStr",
        "Constant",
        "Attribute",
        "Subscript",
        "Starred",
        "Name",
        "List",
        "Tuple",
        "Slice",
        # contexts and operators
        "Load",
        "Store",
        "Del",
        "And",
        "Or",
        "Add",
        "Sub",
        "Mult",
        "MatMult",
        "Div",
        "Mod",
        "Pow",
        "LShift",
        "RShift",
        "BitOr",
        "BitXor",
        "BitAnd",
        "FloorDiv",
        "Invert",
        "Not",
        "UAdd",
        "USub",
        "Eq",
        "NotEq",
        "Lt",
        "LtE",
        "Gt",
        "GtE",
        "Is",
        "IsNot",
        "In",
        "NotIn",
        # helpers
        "comprehension",
        "ExceptHandler",
        "arguments",
        "arg",
        "keyword",
        "alias",
        "withitem",
        "match_case",
        # patterns: checked completely, see sandbox._Checker.visit_MatchClass
        "MatchValue",
        "MatchSingleton",
        "MatchSequence",
        "MatchMapping",
        "MatchClass",
        "MatchStar",
        "MatchAs",
        "MatchOr",
    }
)

# Dunder names a task may read as attributes (`f.__name__`, `super().__init__(...)`).
READABLE_DUNDERS = frozenset({"__name__", "__qualname__", "__doc__", "__module__", "__init__"})
# namedtuple's public API is spelled with one underscore; nothing behind it leads out.
SAFE_PRIVATE = frozenset({"_asdict", "_replace", "_fields", "_make", "_field_defaults"})
# Public attribute names that lead from ordinary objects to frames, code, globals, cells,
# raw memory or files.
BLOCKED_ATTRS = frozenset(
    {
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "f_trace",
        "f_trace_lines",
        "f_trace_opcodes",
        "f_lasti",
        "f_lineno",
        "f_generator",
        "cell_contents",
        "func_globals",
        "func_code",
        "im_func",
        "im_self",
        "tofile",
        "dump",  # ndarray.dump(path) writes a pickle file
        "ctypes",  # ndarray.ctypes hands out raw pointers
        "data_ptr",  # an engine tensor's raw address
        "mro",  # type.mro(): reaches the metaclass machinery
    }
)
# Prefixes of the attribute families of generators, coroutines, async generators,
# tracebacks and code objects.
BLOCKED_ATTR_PREFIXES = ("gi_", "cr_", "ag_", "tb_", "co_")
# Attribute loads the checker routes through the guest's getattr, because what they return
# depends on the object: str.format does attribute lookups of its own ("{0.__class__}"),
# and memoryview.obj is the cross-interpreter buffer object behind ctx.buffers, which
# CPython 3.13.0 crashes on when it is exported a second time.
GUARDED_ATTRS = frozenset({"format", "format_map", "obj"})

# Dunder names a task may use as plain names: `__name__` only read, in module code.
READABLE_NAMES = frozenset({"__name__", "__doc__", "__qualname__", "__module__"})
# What a class body may bind besides public names and CLASS_METHODS: `__slots__` and
# `__match_args__` only as literal tuples of public names, `__hash__ = None`, `__doc__`.
CLASS_BODY_NAMES = frozenset({"__slots__", "__match_args__", "__hash__", "__doc__"})
# Special methods a task class may define. Everything the interpreter calls implicitly
# with objects the task did not hand it, or at a time the budget does not cover, is left
# out: attribute hooks (__getattr__, __getattribute__, __setattr__, __delattr__, __dir__),
# descriptors (__get__, __set__, __delete__, __set_name__), class machinery (__new__,
# __init_subclass__, __class_getitem__, __instancecheck__, __subclasscheck__,
# __subclasshook__, __mro_entries__, __prepare__), copy/pickle (__reduce__, __reduce_ex__,
# __getstate__, __setstate__, __copy__, __deepcopy__), finalizers (__del__), buffers,
# __format__ and async protocols.
CLASS_METHODS = frozenset(
    {
        "__init__",
        "__post_init__",
        "__repr__",
        "__str__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__hash__",
        "__bool__",
        "__len__",
        "__iter__",
        "__next__",
        "__contains__",
        "__getitem__",
        "__setitem__",
        "__delitem__",
        "__call__",
        "__enter__",
        "__exit__",
        "__add__",
        "__radd__",
        "__sub__",
        "__rsub__",
        "__mul__",
        "__rmul__",
        "__truediv__",
        "__rtruediv__",
        "__floordiv__",
        "__mod__",
        "__neg__",
        "__pos__",
        "__abs__",
        "__int__",
        "__float__",
        "__index__",
    }
)
# Dunder names the class machinery itself adds to a class's dict (type, ABCMeta, the
# typing metaclasses, namedtuple); the run-time check accepts them only when their value
# is not a task's own function.
CLASS_MACHINERY_NAMES = frozenset(
    {
        "__module__",
        "__qualname__",
        "__doc__",
        "__dict__",
        "__weakref__",
        "__annotations__",
        "__static_attributes__",
        "__firstlineno__",
        "__orig_bases__",
        "__parameters__",
        "__abstractmethods__",
        "_abc_impl",
        "_is_protocol",
        "_is_runtime_protocol",
        "__protocol_attrs__",
        "__non_callable_proto_members__",
        "__subclasshook__",
        "__new__",
        "__getnewargs__",
        "__replace__",
        "_fields",
        "_field_defaults",
        "_make",
        "_replace",
        "_asdict",
        "__required_keys__",
        "__optional_keys__",
        "__readonly_keys__",
        "__mutable_keys__",
        "__total__",
    }
)
# Builtin classes whose class patterns match the subject itself (`case int(x)`), reading
# no attribute. The checker points such patterns at the real builtin, whatever the task
# bound the name to; positional sub-patterns of any other class are refused, because
# they read the names in the class's `__match_args__`, which the checker cannot see.
MATCH_SELF_TYPES = (
    "bool",
    "bytearray",
    "bytes",
    "dict",
    "float",
    "frozenset",
    "int",
    "list",
    "set",
    "str",
    "tuple",
)

# ---------------------------------------------------------------- builtins
BLOCKED_BUILTINS = {
    "open": "tasks have no file access; read bundle files with ctx.read() or ctx.model()",
    "eval": "dynamic code is not allowed",
    "exec": "dynamic code is not allowed",
    "compile": "dynamic code is not allowed",
    "globals": "introspection is not allowed",
    "locals": "introspection is not allowed",
    "vars": "introspection is not allowed",
    "input": "tasks have no console",
    "breakpoint": "tasks cannot be debugged interactively",
    "help": "tasks have no console",
    "exit": "return from run(ctx) instead",
    "quit": "return from run(ctx) instead",
    "__import__": "use an import statement",
    "__build_class__": "use a class statement",
}
# Builtins a task gets as they are; `type`, `getattr`/`hasattr`/`setattr`/`delattr`,
# `print`, `__import__` and `__build_class__` are the guest's restricted versions, every
# exception class is offered, everything else is absent.
SAFE_BUILTIN_NAMES = frozenset(
    (
        "abs all any ascii bin bool bytearray bytes callable chr classmethod complex dict "
        "divmod enumerate filter float format frozenset hash hex id int isinstance "
        "issubclass iter len list map max min next object oct ord pow property range repr "
        "reversed round set slice sorted staticmethod str sum super tuple zip memoryview dir "
        "NotImplemented Ellipsis"
    ).split()
)

# ---------------------------------------------------------------- modules
# module -> "*" (every public, non-module, non-metaclass attribute) or the exact names.
ALLOWED_MODULES: dict[str, Any] = {
    "math": "*",
    "cmath": "*",
    "statistics": "*",
    "itertools": "*",
    "heapq": "*",
    "bisect": "*",
    "collections.abc": "*",
    "collections": frozenset(
        {
            "namedtuple",
            "deque",
            "Counter",
            "OrderedDict",
            "defaultdict",
            "ChainMap",
            "UserDict",
            "UserList",
            "UserString",
        }
    ),
    "functools": frozenset(
        {
            "reduce",
            "partial",
            "partialmethod",
            "lru_cache",
            "cache",
            "cmp_to_key",
            "total_ordering",
            "cached_property",
        }
    ),
    "json": frozenset({"dumps", "loads", "JSONDecodeError"}),
    "re": frozenset(
        {
            "compile",
            "match",
            "search",
            "fullmatch",
            "findall",
            "finditer",
            "sub",
            "subn",
            "split",
            "escape",
            "error",
            "Pattern",
            "Match",
            "IGNORECASE",
            "I",
            "MULTILINE",
            "M",
            "DOTALL",
            "S",
            "VERBOSE",
            "X",
            "ASCII",
            "A",
            "UNICODE",
            "U",
            "NOFLAG",
        }
    ),
    "time": frozenset(
        {
            "time",
            "time_ns",
            "monotonic",
            "monotonic_ns",
            "perf_counter",
            "perf_counter_ns",
            "sleep",
            "gmtime",
            "localtime",
            "mktime",
            "strftime",
            "struct_time",
        }
    ),
    "random": frozenset(
        {
            "random",
            "randint",
            "randrange",
            "choice",
            "choices",
            "shuffle",
            "sample",
            "uniform",
            "gauss",
            "normalvariate",
            "lognormvariate",
            "expovariate",
            "betavariate",
            "gammavariate",
            "triangular",
            "vonmisesvariate",
            "paretovariate",
            "weibullvariate",
            "seed",
            "getrandbits",
            "Random",
            "binomialvariate",
        }
    ),
    "dataclasses": frozenset(
        {
            "dataclass",
            "field",
            "fields",
            "asdict",
            "astuple",
            "replace",
            "is_dataclass",
            "FrozenInstanceError",
            "KW_ONLY",
            "InitVar",
        }
    ),
    "typing": frozenset(
        {
            "Any",
            "Optional",
            "Union",
            "List",
            "Dict",
            "Tuple",
            "Set",
            "FrozenSet",
            "Iterable",
            "Iterator",
            "Callable",
            "Sequence",
            "Mapping",
            "MutableMapping",
            "TypeVar",
            "Generic",
            "NamedTuple",
            "TypedDict",
            "Literal",
            "Final",
            "ClassVar",
            "Protocol",
            "cast",
            "overload",
            "Self",
            "TypeAlias",
            "Deque",
            "DefaultDict",
            "Counter",
            "Generator",
            "NoReturn",
            "Never",
        }
    ),
    "datetime": frozenset(
        {"date", "datetime", "time", "timedelta", "timezone", "MINYEAR", "MAXYEAR", "UTC"}
    ),
    "fractions": frozenset({"Fraction"}),
    "copy": frozenset({"copy", "deepcopy"}),
    "operator": "*",
    "__future__": frozenset({"annotations"}),
}
# Where an allowed name really comes from. CPython 3.13.0's C `_datetime` keeps static
# state shared between interpreters: with it loaded in two isolated interpreters,
# destroying one aborts the process (munmap_chunk(): invalid pointer), reproduced here.
# The pure-Python implementation is the same API and isolation-safe.
MODULE_SOURCES = {"datetime": "_pydatetime"}
# Public names refused even under "*": they read attributes by a runtime string, or
# evaluate strings, or copy attributes wholesale.
DENIED_NAMES = {
    "operator": frozenset({"attrgetter", "methodcaller"}),
}
# Class decorators that rewrite the class they get: offered for the task's own classes only.
OWN_CLASS_DECORATORS = {
    "dataclasses": ("dataclass",),
    "functools": ("total_ordering",),
}
SUBMODULES = {
    "collections": ("abc",),
    "walle_engine": ("ops", "np", "cv"),
    "numpy": ("linalg", "fft", "random"),
}
# The engine facade minus what touches files or process-wide settings (load, convert,
# import/export_profile, set_isa, set_num_threads): tasks get models through ctx.model().
ENGINE_MODULES: dict[str, Any] = {
    "walle_engine": frozenset(
        {
            "Tensor",
            "TensorInfo",
            "Model",
            "isa",
            "detect_isa",
            "cpu_signature",
            "supported_isas",
            "supported_ops",
            "num_threads",
        }
    ),
    "walle_engine.ops": "*",
    "walle_engine.np": "*",
    "walle_engine.cv": "*",
}
# Offered only with config["requires"] = ["numpy"], i.e. in the process backend (numpy
# refuses to load in isolated interpreters).
NUMPY_MODULES: dict[str, Any] = {
    "numpy": "*",
    "numpy.linalg": "*",
    "numpy.fft": "*",
    "numpy.random": "*",
}
NUMPY_DENIED = frozenset(
    {
        "load",
        "save",
        "savez",
        "savez_compressed",
        "fromfile",
        "loadtxt",
        "savetxt",
        "genfromtxt",
        "memmap",
        "ctypeslib",
        "lib",
        "DataSource",
        "f2py",
        "testing",
        "distutils",
        "fromregex",
        "show_config",
        "info",
    }
)
# Packages whose own C code may import their private submodules while a task runs.
LIBRARY_PACKAGES = frozenset({"numpy", "walle_engine"})
REQUIRABLE = frozenset({"numpy"})

# ---------------------------------------------------------------- run-time layer
# Audit events (sys.addaudithook, per interpreter) allowed while task code runs; any
# other event (open outside the bundle, os.*, subprocess, socket, ctypes, gc walks,
# sys._getframe, frame and code attribute reads, marshal.loads, new code objects, ...)
# raises SandboxViolation in the task, whatever path the task took to reach it.
AUDIT_ALLOWED = frozenset(
    {
        "exec",  # a task module's own (pre-checked) code, and namedtuple/dataclass helpers
        "compile",  # namedtuple and dataclasses build their methods from source
        "marshal.dumps",  # ctx.state measures values
        "time.sleep",
        "builtins.id",
        "mmap.__new__",  # the engine maps model files; files open only read-only (below)
        "array.__new__",
        "os.putenv",  # numpy's import sets its own threading variables; no new processes
        "os.unsetenv",
        "sys._getframemodulename",  # namedtuple/NamedTuple name their class's module
        "sys.unraisablehook",
        "import",  # filtered: AUDIT_IMPORTS
        "open",  # filtered: read-only, the run's bundle files and the Python runtime's own
    }
)
# Attributes any code may set on any class or function while a task runs (audit event
# object.__setattr__): namedtuple, dataclasses and pybind11 name what they build. Other
# attribute stores on classes are allowed only on the task's own classes, so no task can
# monkeypatch a stdlib, engine or guest class that other tasks share; a function's
# __code__ is never replaced.
AUDIT_SETATTR_NAMES = frozenset(
    {
        "__module__",
        "__doc__",
        "__qualname__",
        "__name__",
        "__defaults__",
        "__kwdefaults__",
        "__annotations__",
        "__type_params__",
    }
)
# Function attributes that raise object.__getattr__ and that inspect.signature reads
# (dataclasses and numpy call it); the frame accessors (gi_frame, cr_frame, ag_frame,
# tb_frame) raise the same event and stay refused.
AUDIT_GETATTR_NAMES = frozenset({"__code__", "__defaults__", "__kwdefaults__"})
# Modules that may be loaded while a task runs (the "import" event; top-level names):
# the standard library (sys.stdlib_module_names, minus AUDIT_IMPORTS_DENIED), the allowed
# modules and packages, and these.
AUDIT_IMPORTS_DENIED = frozenset(
    {"ctypes", "_ctypes", "faulthandler", "_testcapi", "_testinternalcapi", "_xxsubinterpreters"}
)
AUDIT_IMPORTS = frozenset(
    {
        "encodings",
        "_strptime",
        "locale",
        "_locale",
        "calendar",
        "unicodedata",
        "_pydatetime",
        "_pydecimal",
        "decimal",
        "_decimal",
        "numbers",
        "string",
        "_string",
        "copyreg",
        "_json",
        "json",
        # walle_engine's and numpy's own imports (measured against a booted guest)
        "array",
        "mmap",
        "contextvars",
        "_contextvars",
        "datetime",
        "_datetime",
        "platform",
    }
)


def as_data() -> dict[str, Any]:
    """The whole policy as marshal-able plain data, for the guest."""
    return {
        name: value
        for name, value in globals().items()
        if name.isupper() and not name.startswith("_")
    }


# ---- generated by `python -m walle_device.vm.surface --write`; do not edit by hand
# The public attribute names of what the policy offers tasks, computed by
# walle_device/vm/surface.py: builtin types, the allowed modules' names and the
# attributes of their classes and objects, the task API.
ATTRIBUTE_NAMES = frozenset(
    """
    A ASCII Any AsyncGenerator AsyncIterable AsyncIterator Awaitable AxisError Buffer ByteString
    Callable ChainMap ClassVar Collection Container Coroutine Counter DEBUG DOTALL DefaultDict
    Deque Dict Ellipsis Final Fraction FrozenInstanceError FrozenSet Generator Generic Hashable I
    IGNORECASE InitVar ItemsView Iterable Iterator JSONDecodeError KW_ONLY KeysView LOCALE List
    Literal M MAXYEAR MINYEAR MULTILINE Mapping MappingView Match MemoryBudgetExceeded Model
    ModelUnavailable MutableMapping MutableSequence MutableSet NOFLAG NamedTuple Never NoReturn
    NormalDist NotImplemented Optional OrderedDict Pattern Protocol Random Reversible S
    SandboxViolation Self Sequence Set Sized StateFull StatisticsError T TaskTimeout Tensor
    TensorInfo Tuple TypeAlias TypeVar TypedDict U UNICODE UTC Union UserDict UserList UserString
    VERBOSE VERSION ValuesView X abc abs absolute accumulate aclose acos acosh add add_note all
    allclose and_ annotations any append appendleft arange argmax argmin args argsort array
    array_equal as_integer_ratio asarray ascii asdict asend asin asinh astimezone astuple astype
    atan atan2 atanh athrow attrname batched betavariate bin binary binomialvariate bisect
    bisect_left bisect_right bit_count bit_length bool bool_ broadcast_to buffers bytearray bytes
    c_contiguous cache cache_clear cache_info cached_property call callable capitalize casefold
    cast cbrt cdf ceil center chain characters_written choice choices chr classmethod clear clip
    close cmp_to_key code colno comb combinations combinations_with_replacement combine compare
    compile compiler_flag complex compose_raster compress concat concatenate config conjugate
    contains contiguous copy copy_with copysign correlation cos cosh count countOf covariance
    cpu_signature crop ctime currsize cv cvt_color cycle data dataclass date datetime day days
    debug decode deepcopy default default_factory defaultdict degrees delete deleter delitem
    denominator deque derive detect_isa device dict difference difference_update dir discard dist
    divide divmod doc dot dropwhile dst dtype dumps e elements empty empty_like encode encoding
    end end_lineno end_offset endpos endswith enumerate eq equal erf erfc errno error escape
    exceptions exp exp2 expand expand_dims expandtabs expm1 expovariate extend extendleft eye
    f_contiguous fabs factorial fdel fget field fields filename filename2 files fill filter
    filterfalse find findall finditer flags flatten flip float float32 floor floor_divide floordiv
    fma fmean fmod fold format format_map frexp from_bytes from_decimal from_float from_iterable
    from_samples fromhex fromisocalendar fromisoformat fromkeys fromordinal fromtimestamp fromutc
    frozenset fset fsum full full_like fullmatch func gamma gammavariate gauss gauss_next gcd ge
    geometric_mean get getMandatoryRelease getOptionalRelease getitem getrandbits getstate getter
    gmtime greater greater_equal group groupby groupdict groupindex groups gt harmonic_mean
    has_default hash heapify heappop heappush heappushpop heapreplace hex hits hour hypot iadd
    iand iconcat id ifloordiv ilshift imag imatmul imod imul incr index indexOf indices inf infj
    info init inputs insert insort insort_left insort_right int int32 int64 intersection
    intersection_update inv inv_cdf invert ior ipow irshift is_ is_dataclass is_integer is_not isa
    isalnum isalpha isascii isclose isdecimal isdigit isdisjoint isfinite isidentifier isinf
    isinstance islice islower isnan isnumeric isocalendar isoformat isoweekday isprintable isqrt
    isspace issubclass issubset issuperset istitle isub isupper item itemgetter items itemsize
    iter itruediv ixor join kde kde_random keys keywords kind kw_only lastgroup lastindex lcm
    ldexp le len length_hint less less_equal letterbox lgamma limit_denominator linear_regression
    lineno linspace list ljust loads localtime log log10 log1p log2 logical_and logical_not
    logical_or logical_xor lognormvariate lower lru_cache lshift lstrip lt maketrans mandatory map
    mapping maps match matmul max maximum maxlen maxsize mean median median_grouped median_high
    median_low memory memoryview merge merged_rasters message metadata microsecond microseconds
    min minimum minute misses mktime mod mode model modf monotonic monotonic_ns month most_common
    move_to_end msg mul multimode multiply n_fields n_sequence_fields n_unnamed_fields name
    name_from namedtuple nan nanj nbytes ndarray ndim ne neg negative new_child newaxis next
    nextafter nlargest nonzero normalize normalvariate not_ not_equal now np nsmallest num_threads
    numerator obj object oct offset offset_in ones ones_like ops optional or_ ord outputs overlap
    overload pad pairwise parents paretovariate partial partialmethod partition path pattern pdf
    perf_counter perf_counter_ns perm permutations phase pi plan polar pop popitem popleft pos pow
    power print_file_and_line prod product profile property pstdev pvariance quantiles radians
    randbytes randint random randrange range raster ravel re read readonly real reason rect reduce
    register regs release remainder remove removeprefix removesuffix repeat replace repr reshape
    resize resolution return_tensor reverse reversed rfind rindex rjust rotate round rpartition
    rshift rsplit rstrip run sample samples scanner search second seconds seed select send set
    setdefault setitem setstate setter shape shares_storage shuffle sigmoid sign sin sinh size
    size_bytes sleep slice sort sorted span split splitlines sqrt square squeeze stack starmap
    start startswith state staticmethod std stdev step steps stop str strerror strftime strides
    string strip strptime struct_time sub subgroup subn suboffsets subtract sum sumprod super
    supported_isas supported_ops swapcase symmetric_difference symmetric_difference_update take
    takewhile tan tanh task_id tau tee tensor text throw time time_left time_ns timedelta
    timestamp timetuple timetz timezone title tm_gmtoff tm_hour tm_isdst tm_mday tm_min tm_mon
    tm_sec tm_wday tm_yday tm_year tm_zone to_bytes to_tensor tobytes today tolist toordinal topk
    toreadonly total total_ordering total_seconds translate transpose triangular true_divide
    truediv trunc truth tuple type tzinfo tzname uint8 ulp unary uniform union update upload upper
    utc utcfromtimestamp utcnow utcoffset utctimetuple value values var variance vonmisesvariate
    warning weekday weibullvariate where window with_traceback xor year zeros zeros_like zfill zip
    zip_longest zscore
    """.split()
)
# ---- end of generated names
