"""The adversarial suite: classes of attack on the task VM, each with many generated
variants, written as an attacker would (the class is the point, not any one case).

Every case asserts two things: the attack is refused (SandboxViolation at load) or
contained (the run fails, or succeeds without reaching anything it must not), and the host
process is intact (`HostCheck`: the VM still answers, host objects and files are untouched,
a neighbour task's secret config never shows up, `vm.run` never raised).

Classes (issue 12, VM side): implicit attribute access (pattern matching, special
methods, format strings, super), class-body and metaclass tricks, introspection walks
(frames, tracebacks, generators, gc, globals, builtins), dynamic code and imports,
unicode-normalised identifiers, host trust (forged handles, forged tensors, marshal
back-reference bombs, oversized results), lifecycle. A group at the end runs attacks
with the load-time checker switched off, to show the run-time layer holds on its own.
"""

from __future__ import annotations

import builtins
import collections
import json
import keyword
import marshal
import os
import secrets
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walle_device.vm import RunResult, SandboxViolation, TaskVM, boundary, guest, policy, sandbox

SECRET = secrets.token_hex(16)  # a neighbour task's config value; must never leak
ESCAPED = "ESCAPED"
REAL = {
    "open": builtins.open,
    "getattr": builtins.getattr,
    "type": builtins.type,
    "json.dumps": json.dumps,
    "Counter.most_common": collections.Counter.most_common,
    "os.system": os.system,
}


@pytest.fixture(scope="module")
def canary() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="walle-canary-") as d:
        (Path(d) / "canary.txt").write_text(SECRET)
        yield Path(d)


@pytest.fixture(scope="module")
def vm(canary: Path) -> Iterator[TaskVM]:
    with TaskVM(2, process_workers=1) as v:
        v.load("victim", "def run(ctx):\n    return len(ctx.config)\n", config={"secret": SECRET})
        v.load("probe", "def run(ctx):\n    return sum(range(10))\n")
        v.wait_ready()
        yield v


@dataclass
class Outcome:
    refused_at_load: str = ""
    result: RunResult | None = None

    @property
    def text(self) -> str:
        return self.refused_at_load + repr(self.result)


class HostCheck:
    """The host process is intact after an attack."""

    def __init__(self, vm: TaskVM, canary: Path) -> None:
        self.vm, self.canary = vm, canary

    def __call__(self, outcome: Outcome) -> None:
        assert SECRET not in outcome.text, f"a neighbour's secret leaked: {outcome.text[:500]}"
        assert ESCAPED not in repr(outcome.result and outcome.result.output)
        assert builtins.open is REAL["open"] and builtins.getattr is REAL["getattr"]
        assert builtins.type is REAL["type"] and json.dumps is REAL["json.dumps"]
        assert collections.Counter.most_common is REAL["Counter.most_common"]
        assert os.system is REAL["os.system"]
        assert sorted(p.name for p in self.canary.iterdir()) == ["canary.txt"]
        assert (self.canary / "canary.txt").read_text() == SECRET
        assert self.vm.run("victim").output == 1  # a neighbour's config is untouched
        assert self.vm.run("probe").output == 45  # the VM still serves runs


@pytest.fixture(scope="module")
def host(vm: TaskVM, canary: Path) -> HostCheck:
    return HostCheck(vm, canary)


def attack(
    vm: TaskVM,
    host: HostCheck,
    source: str,
    *,
    config: dict[str, Any] | None = None,
    files: dict[str, bytes] | None = None,
) -> Outcome:
    """Load and run one attack; assert refused-or-contained and the host intact."""
    source = textwrap.dedent(source).replace("CANARY", str(host.canary))
    cfg = {"max_failures": 1_000_000, "timeout_s": 5, **(config or {})}
    try:
        vm.load("attacker", source, files=files, config=cfg)
    except SandboxViolation as e:
        outcome = Outcome(refused_at_load=str(e))
    else:
        vm.enable("attacker")
        result = vm.run("attacker", {"secret_hint": "config"}, buffers={"b": b"host bytes"})
        assert isinstance(result, RunResult)  # vm.run() never raises
        outcome = Outcome(result=result)
        if result.ok:
            assert result.output != ESCAPED, source
    host(outcome)
    return outcome


def refused(outcome: Outcome) -> bool:
    return bool(outcome.refused_at_load) or (
        outcome.result is not None
        and not outcome.result.ok
        and outcome.result.error_type in ("SandboxViolation", "FileAccessRefused")
    )


def body(code: str) -> str:
    """A task whose run(ctx) is `code`."""
    return "def run(ctx):\n" + textwrap.indent(textwrap.dedent(code), "    ") + "\n"


# --------------------------------------------------------------------------- special methods
ALL_SPECIAL_METHODS = sorted(
    {
        *policy.CLASS_METHODS,
        *"""__del__ __getattr__ __getattribute__ __setattr__ __delattr__ __dir__ __get__
        __set__ __delete__ __set_name__ __init_subclass__ __class_getitem__ __instancecheck__
        __subclasscheck__ __subclasshook__ __mro_entries__ __prepare__ __new__ __reduce__
        __reduce_ex__ __getstate__ __setstate__ __copy__ __deepcopy__ __getnewargs__
        __getnewargs_ex__ __format__ __buffer__ __release_buffer__ __fspath__ __await__
        __aiter__ __anext__ __aenter__ __aexit__ __class__ __dict__ __slots__ __weakref__
        __module__ __qualname__ __annotations__ __match_args__ __length_hint__ __missing__
        __reversed__ __round__ __trunc__ __floor__ __ceil__ __complex__ __bytes__
        __sizeof__ __subclasses__ __mro__ __bases__ __base__ __globals__ __code__
        __closure__ __builtins__ __import__ __loader__ __spec__ __file__ __path__
        __init__subclass __iadd__ __ior__ __or__ __ror__ __and__ __xor__ __lshift__
        __rshift__ __invert__ __matmul__ __rmatmul__ __pow__ __rpow__ __divmod__
        __hash__ __eq__ __bool__ __objclass__ __wrapped__ __signature__ __text_signature__
        __orig_bases__ __parameters__ __type_params__ __abstractmethods__
        __static_attributes__ __firstlineno__ __classcell__ __post_init__ __replace__
        """.split(),
    }
)


@pytest.mark.parametrize("name", ALL_SPECIAL_METHODS)
def test_a_class_may_define_only_the_listed_special_methods(
    vm: TaskVM, host: HostCheck, name: str
) -> None:
    outcome = attack(
        vm,
        host,
        f"""
        class Evil:
            def {name}(self, *a, **k):
                return "{ESCAPED}"

        def run(ctx):
            return 1
        """,
    )
    if name in policy.CLASS_METHODS:
        assert outcome.result is not None and outcome.result.ok, outcome.text
    else:
        assert name in outcome.refused_at_load, outcome.text


@pytest.mark.parametrize("name", ALL_SPECIAL_METHODS)
@pytest.mark.parametrize("how", ["assign", "lambda-assign", "annotated"])
def test_a_class_body_may_bind_only_listed_dunders(
    vm: TaskVM, host: HostCheck, name: str, how: str
) -> None:
    stmt = {
        "assign": f"{name} = print",
        "lambda-assign": f"{name} = lambda *a: '{ESCAPED}'",
        "annotated": f"{name}: object = None",
    }[how]
    outcome = attack(vm, host, f"class Evil:\n    {stmt}\n\ndef run(ctx):\n    return 1\n")
    if (name, how) == ("__hash__", "annotated"):  # `__hash__ = None` is allowed
        assert outcome.result is not None and outcome.result.ok, outcome.text
        return
    assert refused(outcome), outcome.text


@pytest.mark.parametrize("name", sorted(set(ALL_SPECIAL_METHODS) - policy.CLASS_METHODS))
@pytest.mark.parametrize(
    "how",
    [
        "type(\"E\", (), {NAME: lambda *a: 'ESCAPED'})",
        "type(int)(\"E\", (), {NAME: lambda *a: 'ESCAPED'})",
        "type(type)(\"E\", (), {NAME: lambda *a: 'ESCAPED'})",
        'type(dataclasses.dataclass(type("E", (), {})))("E2", (), {NAME: len})',
    ],
)
def test_special_methods_cannot_be_added_at_run_time(
    vm: TaskVM, host: HostCheck, name: str, how: str
) -> None:
    computed = " + ".join(repr(c) for c in name)  # never spelled out in the source
    outcome = attack(
        vm,
        host,
        "import dataclasses\n" + body(f"E = {how.replace('NAME', computed)}\nreturn E.__name__"),
    )
    assert refused(outcome), outcome.text


CLASS_BODY_TRICKS = {
    "metaclass-kw": "class M(type):\n    pass\nclass E(metaclass=M):\n    pass",
    "any-class-kw": "class E(flag=1):\n    pass",
    "star-bases": "bases = (object,)\nclass E(*bases):\n    pass",
    "derive-type": "class M(type):\n    pass",
    "derive-type-alias": "T = type\nclass M(T):\n    pass",
    "derive-type-of-type": "class M(type(type)):\n    pass",
    "if-in-body": "class E:\n    if True:\n        def __del__(self):\n            pass",
    "for-in-body": "class E:\n    for n in range(2):\n        pass",
    "import-in-body": "class E:\n    import math",
    "call-in-body": "class E:\n    print('x')",
    "unpack-in-body": "class E:\n    a, b = 1, 2",
    "slots-dunder": "class E:\n    __slots__ = ('__dict__',)",
    "slots-computed": "class E:\n    __slots__ = tuple(['__' + 'dict__'])",
    "match-args-dunder": "class E:\n    __match_args__ = ('__class__',)",
    "match-args-computed": "class E:\n    __match_args__ = tuple(['gi_' + 'frame'])",
    "match-args-frame": "class E:\n    __match_args__ = ('gi_frame',)",
    "hash-function": "class E:\n    __hash__ = id",
    "private-method": "class E:\n    def _helper(self):\n        pass",
    "mangled-method": "class E:\n    def __helper(self):\n        pass",
    "walrus-in-body": "class E:\n    x = (__del__ := print)",
    "class-getitem": "class E:\n    __class_getitem__ = classmethod(lambda c, k: c)",
    "nested-evil": "class E:\n    class F:\n        def __del__(self):\n            pass",
    "decorated-evil": "class E:\n    @staticmethod\n    def __reduce_ex__(p):\n        pass",
    "property-dunder": "class E:\n    @property\n    def __class__(self):\n        return int",
    "type-params": "class E[T]:\n    pass",
    "type-alias": "type X = int",
    "generic-def": "def f[T](x: T) -> T:\n    return x",
}


@pytest.mark.parametrize("case", sorted(CLASS_BODY_TRICKS))
def test_class_body_tricks_are_refused(vm: TaskVM, host: HostCheck, case: str) -> None:
    outcome = attack(vm, host, CLASS_BODY_TRICKS[case] + "\n\ndef run(ctx):\n    return 1\n")
    assert refused(outcome), outcome.text


# --------------------------------------------------------------------------- pattern matching
PATTERNS = {
    # positional sub-patterns read __match_args__ with a plain getattr
    "task-class-positional": (
        "class P:\n    __match_args__ = ('x',)\n    def __init__(self):\n        self.x = 1\n",
        "P()",
        "case P(v): return v",
    ),
    "dataclass-positional": (
        "import dataclasses\n@dataclasses.dataclass\nclass P:\n    x: int\n",
        "P(1)",
        "case P(v): return v",
    ),
    "namedtuple-positional": (
        "import collections\nP = collections.namedtuple('P', 'x')\n",
        "P(1)",
        "case P(v): return v",
    ),
    "stdlib-positional": (
        "import datetime\n",
        "datetime.date(2020, 1, 1)",
        "case datetime.date(y): return y",
    ),
    "shadowed-int": (
        "class Evil:\n    __match_args__ = ('x',)\nint = Evil\n",
        "Evil()",
        "case int(v): return 'ESCAPED'",
    ),
    "keyword-class": ("", "ctx", "case object(__class__=c): return c"),
    "keyword-frame": ("", "(i for i in ())", "case object(gi_frame=f): return f"),
    "keyword-globals": ("", "run", "case object(__globals__=g): return g"),
    "keyword-code": ("", "run", "case object(__code__=c): return c"),
    "keyword-format": ("", "'{0.__class__}'", "case str(format=f): return f(1)"),
    "keyword-obj": ("", "ctx.buffers['b']", "case memoryview(obj=o): return o"),
    "keyword-private": ("", "ctx", "case object(_task=t): return t"),
    "keyword-cell": ("", "1", "case object(cell_contents=c): return c"),
    "keyword-f-back": ("", "1", "case object(f_back=c): return c"),
    "keyword-tb": ("", "1", "case object(tb_frame=c): return c"),
    "keyword-co": ("", "1", "case object(co_consts=c): return c"),
    "as-dunder": ("", "1", "case __builtins__: return 1"),
    "as-dunder-capture": ("", "1", "case int() as __builtins__: return 1"),
    "star-dunder": ("", "[1, 2]", "case [1, *__builtins__]: return 1"),
    "rest-dunder": ("", "{'a': 1}", "case {'a': 1, **__builtins__}: return 1"),
    "reserved-name": ("", "1", "case _walle_types: return 1"),
    "or-keyword": ("", "1", "case object(__dict__=d) | object(__class__=d): return d"),
    "nested-keyword": ("", "[ctx]", "case [object(__class__=c)]: return c"),
    "value-pattern-dunder": ("import math\n", "1", "case math.__dict__: return 1"),
    "mapping-value-dunder": ("import math\n", "{}", "case {math.__loader__: v}: return v"),
}


@pytest.mark.parametrize("case", sorted(PATTERNS))
def test_pattern_matching_reads_no_attribute_the_checker_did_not_see(
    vm: TaskVM, host: HostCheck, case: str
) -> None:
    prelude, subject, clause = PATTERNS[case]
    source = prelude + body(f"match {subject}:\n    {clause}\n    case _: return 0")
    outcome = attack(vm, host, source)
    # Refused, or (a rebound builtin name) matched against the real builtin: no match.
    assert refused(outcome) or outcome.result.output == 0, outcome.text


def test_builtin_class_patterns_still_work_when_the_name_is_rebound(
    vm: TaskVM, host: HostCheck
) -> None:
    outcome = attack(
        vm,
        host,
        """
        int = str  # a task rebinding the name changes nothing: patterns use the builtin
        def run(ctx):
            match 7:
                case int(v):
                    return ["int", v]
                case str(v):
                    return ["str", v]
        """,
    )
    assert outcome.result is not None and outcome.result.output == ["int", 7], outcome.text


def test_keyword_patterns_on_task_classes_work(vm: TaskVM, host: HostCheck) -> None:
    outcome = attack(
        vm,
        host,
        """
        import dataclasses
        @dataclasses.dataclass
        class Point:
            x: int
            y: int
        def run(ctx):
            match Point(1, 2):
                case Point(x=a, y=b):
                    return a + b
        """,
    )
    assert outcome.result is not None and outcome.result.output == 3, outcome.text


# --------------------------------------------------------------------------- format strings
FORMAT_TEMPLATES = [
    "{0.__class__}",
    "{0.__class__.__base__}",
    "{0.__init__.__globals__}",
    "{0.__globals__[__builtins__]}",
    "{0.gi_frame}",
    "{0.gi_frame.f_back}",
    "{0.__self__}",
    "{0.__dict__}",
    "{0._task}",
    "{0.__closure__}",
    "{0.__code__.co_consts}",
    "{0.f_globals}",
    "{0.__traceback__.tb_frame}",
    "{0.__func__.__globals__}",
    "{0.__mro__}",
    "{0.__subclasses__}",
    "{0.mro}",
    "{0.obj}",
    "{0.__reduce_ex__}",
    "{0.cell_contents}",
]
FORMAT_CALLS = [
    "return T.format(X)",
    "return str.format(T, X)",
    "return T.format_map({'0': X})",
    "return getattr(T, 'format')(X)",
    "return getattr(str, 'format')(T, X)",
    "f = T.format\nreturn f(X)",
    "import functools\nreturn functools.partial(str.format, T)(X)",
    "return list(map(T.format, [X]))",
    "return type(T).format(T, X)",
    "return super(str, T).format(X)",
    "return ''.join([T]).format(X)",
    "return T.upper().lower().format(X)",
]


@pytest.mark.parametrize("template", FORMAT_TEMPLATES)
@pytest.mark.parametrize("call", FORMAT_CALLS)
def test_format_strings_cannot_read_refused_attributes(
    vm: TaskVM, host: HostCheck, template: str, call: str
) -> None:
    code = call.replace("T", repr(template)).replace("X", "SUBJECT")
    source = body(
        "g = (i for i in ())\n"
        "SUBJECT = {'{0.gi': g}.get(" + repr(template[:5]) + ", ctx.upload)\n" + code
    )
    outcome = attack(vm, host, source)
    assert refused(outcome) or (outcome.result is not None and not outcome.result.ok), outcome.text


def test_ordinary_format_strings_work(vm: TaskVM, host: HostCheck) -> None:
    outcome = attack(
        vm,
        host,
        body(
            "return ['{0} {1:.2f} {x[k]}'.format('a', 2.5, x={'k': 3}), "
            "'{0.real}'.format(3), f'{ctx.task_id!r:>12}', format(3.14159, '.3f'), "
            "'%(a)s' % {'a': 1}]"
        ),
    )
    assert outcome.result is not None and outcome.result.ok, outcome.text
    assert outcome.result.output[:2] == ["a 2.50 3", "3"]


# --------------------------------------------------------------------------- introspection walks
WALKS = {
    "subclasses": "return ().__class__.__base__.__subclasses__()",
    "subclasses-getattr": "return getattr(getattr((), '__cl'+'ass__'), '__subcl'+'asses__')()",
    "type-subclasses": "return type.__subclasses__(object)",
    "mro-walk": "return int.mro()",
    "mro-getattr": "return getattr(int, 'm'+'ro')()",
    "func-globals": "return run.__globals__",
    "func-builtins": "return run.__builtins__",
    "lambda-builtins": "return (lambda: 0).__builtins__",
    "api-globals": "return ctx.upload.__globals__",
    "api-closure": "return ctx.upload.__closure__",
    "api-closure-getattr": "return getattr(ctx.upload, '__clo'+'sure__')",
    "api-class-init-globals": "return ctx.log.__class__.__init__.__globals__",
    "method-self": "return ctx.log.info.__self__",
    "builtin-self": "return print.__self__",
    "builtin-self-getattr": "return getattr(len, '__se'+'lf__')",
    "gen-frame": "g = (i for i in ())\nreturn g.gi_frame.f_back.f_globals",
    "gen-frame-getattr": "g = (i for i in ())\nreturn getattr(g, 'gi_'+'frame')",
    "gen-code": "g = (i for i in ())\nreturn g.gi_code",
    "gen-yieldfrom": "g = (i for i in ())\nreturn getattr(g, 'gi_'+'yieldfrom')",
    "tb-frame": "try:\n    1/0\nexcept Exception as e:\n    return e.__traceback__.tb_frame",
    "tb-getattr": "try:\n    1/0\nexcept Exception as e:\n    return getattr(e, '__trace'+'back__')",
    "context-chain": "try:\n    1/0\nexcept Exception as e:\n    return e.__context__",
    "cause-chain": "try:\n    1/0\nexcept Exception as e:\n    return e.__cause__",
    "with-traceback": "try:\n    1/0\nexcept Exception as e:\n    return e.with_traceback(None).__traceback__",
    "code-consts": "return run.__code__.co_consts",
    "code-replace": "return (lambda: 0).__code__.replace",
    "cell-contents": "def f():\n    x = 1\n    return lambda: x\nreturn f().__closure__[0].cell_contents",
    "dict-of-ctx": "return ctx.__dict__",
    "vars-ctx": "return vars(ctx)",
    "globals": "return globals()",
    "locals": "return locals()",
    "builtins-name": "return __builtins__",
    "import-dunder": "return __import__('os')",
    "loader": "return __loader__",
    "spec": "return __spec__",
    "private-state": "return ctx.state._data",
    "private-getattr": "return getattr(ctx.state, '_' + 'data')",
    "private-hasattr": "return hasattr(ctx, '_' + 'task')",
    "object-getattribute": "return object.__getattribute__(ctx, 'upload')",
    "super-getattribute": "return super(type(ctx), ctx).__getattribute__('upload')",
    "descriptor-get": "return type(ctx).upload.__get__(ctx)",
    "slots-read": "return type(ctx).__slots__",
    "dir-then-getattr": "return [getattr(ctx, n) for n in dir(ctx)]",
    "reduce-getattr": "import functools\nreturn functools.reduce(getattr, ['__class__'], ctx)",
    "map-getattr": "return list(map(getattr, [ctx], ['__class__']))",
    "attrgetter": "import operator\nreturn operator.attrgetter('__class__')(ctx)",
    "methodcaller": "import operator\nreturn operator.methodcaller('__reduce_ex__', 4)(ctx)",
    "sorted-key-getattr": "return sorted([ctx], key=lambda x: getattr(x, '__class__'))",
    "copy-reduce": "import copy\nreturn copy.copy(ctx).__reduce_ex__(4)",
    "copy-ctx": "import copy\nc = copy.copy(ctx)\nreturn getattr(c, '_' + 'run')",
    "deepcopy-closure": "import copy\nreturn copy.deepcopy(ctx.upload).__closure__",
    "typing-hints": "import typing\nreturn typing.get_type_hints(run)",
    "module-codecs": "import json\nreturn json.codecs",
    "module-sys": "import typing\nreturn typing.sys.modules",
    "module-dict": "import math\nreturn math.__dict__",
    "module-loader": "import math\nreturn math.__loader__",
    "abc-metaclass": "import collections.abc\nreturn collections.abc.ABCMeta",
    "abc-type-of": "import collections.abc\nreturn type(collections.abc.Mapping)('E', (), {})",
    "buffer-obj": "return ctx.buffers['b'].obj",
    "buffer-obj-getattr": "return getattr(ctx.buffers['b'], 'o' + 'bj')",
    "monkeypatch-module": "import json\njson.dumps = len",
    "monkeypatch-stdlib-class": "import collections\ncollections.Counter.most_common = len",
    "monkeypatch-setattr": "import collections\nsetattr(collections.Counter, 'most_common', len)",
    "monkeypatch-augassign": "import collections\ncollections.Counter.x += 1",
    "monkeypatch-del": "import collections\ndel collections.Counter.most_common",
    "monkeypatch-for-target": "import collections\nfor collections.Counter.x in [1]:\n    pass",
    "monkeypatch-type-of": "type(ctx.state).get = len",
    "monkeypatch-via-instance-type": "import fractions\ntype(fractions.Fraction(1)).limit_denominator = len",
    "monkeypatch-dataclass": "import collections, dataclasses\ndataclasses.dataclass(collections.UserDict)",
    "monkeypatch-total-ordering": "import collections, functools\nfunctools.total_ordering(collections.UserList)",
    "monkeypatch-api": "type(ctx.state).get = len",
    "monkeypatch-task-module": "import helper\nhelper.value = 'ESCAPED'",
    "set-private": "setattr(ctx, '_' + 'run', None)",
    "del-private": "delattr(ctx.state, '_' + 'data')",
    "walle-private": "import walle\nreturn walle.__dict__",
    "walle-open": "import walle\nreturn walle.open",
    "engine-core": "import walle_engine._core",
    "engine-load": "from walle_engine import load",
    "engine-data-ptr": "from walle_engine import np\nreturn np.zeros(2).tensor.data_ptr",
}


@pytest.mark.parametrize("case", sorted(WALKS))
def test_introspection_walks_are_refused(vm: TaskVM, host: HostCheck, case: str) -> None:
    outcome = attack(vm, host, body(WALKS[case]), files={"helper.py": b"value = 1\n"})
    assert refused(outcome), outcome.text


# --------------------------------------------------------------------------- code and imports
DYNAMIC = {
    "eval": "return eval('1')",
    "exec": "exec('x = 1')",
    "compile": "return compile('1', 'x', 'eval')",
    "open": "return open('CANARY/canary.txt').read()",
    "open-write": "open('CANARY/new.txt', 'w').write('x')",
    "input": "return input()",
    "breakpoint": "breakpoint()",
    "help": "help(len)",
    "exit": "exit()",
    "type3": "return type('E', (), {})",
    "build-class": "return __build_class__",
    "import-os": "import os\nreturn os.listdir('/')",
    "import-sys": "import sys\nreturn sys.modules",
    "import-gc": "import gc\nreturn gc.get_objects()",
    "import-inspect": "import inspect\nreturn inspect.currentframe()",
    "import-ctypes": "import ctypes",
    "import-importlib": "import importlib\nreturn importlib.import_module('os')",
    "import-subprocess": "import subprocess",
    "import-socket": "import socket",
    "import-weakref": "import weakref",
    "import-traceback": "import traceback",
    "import-builtins": "import builtins\nreturn builtins.open",
    "import-io": "import io\nreturn io.open('CANARY/canary.txt').read()",
    "import-pickle": "import pickle",
    "import-marshal": "import marshal",
    "import-threading": "import threading",
    "import-json-submodule": "import json.decoder",
    "from-json-submodule": "from json import decoder",
    "from-re-private": "from re import _compiler",
    "relative": "from . import helper",
    "star": "from math import *",
    "numpy-without-requires": "import numpy",
    "time-private": "import time\nreturn time.get_clock_info",
    "random-os": "import random\nreturn random._os",
    "dunder-kwarg": "return dict(__globals__=1)",
    "dunder-param": "def f(__class__=1):\n    return 1\nreturn f()",
    "lambda-default-builtins": "f = lambda x=__builtins__: x\nreturn f()",
    "lambda-default-globals": "f = lambda x=run.__globals__: x\nreturn f()",
    "decorator-globals": "def d(f):\n    return f.__globals__\n@d\ndef g():\n    pass\nreturn g",
    "global-dunder": "global __builtins__\n__builtins__ = {}",
    "nonlocal-reserved": "def f():\n    nonlocal _walle_attr\n",
    "reserved": "return _walle_attr(ctx, '_run')",
    "reserved-types": "return _walle_types",
    "async": "async def f():\n    pass",
    "await": "async def f():\n    await f()",
    "yield-in-try": "def g():\n    try:\n        yield 1\n    finally:\n        pass\nreturn list(g())",
    "yield-in-with": "def g(cm):\n    with cm:\n        yield 1\nreturn 1",
    "del-define": "class E:\n    def __del__(self):\n        pass",
}


@pytest.mark.parametrize("case", sorted(DYNAMIC))
def test_dynamic_code_imports_and_io_are_refused(vm: TaskVM, host: HostCheck, case: str) -> None:
    outcome = attack(vm, host, body(DYNAMIC[case]))
    assert refused(outcome), outcome.text


# --------------------------------------------------------------------------- unicode identifiers
NFKC = {
    "fullwidth-eval": "return ｅｖａｌ('1')",
    "fullwidth-open": "return ｏｐｅｎ('CANARY/canary.txt').read()",
    "fullwidth-exec": "ｅｘｅｃ('1')",
    "fullwidth-dunder-attr": "return ().__ｃｌａｓｓ__",
    "fullwidth-builtins": "return __ｂｕｉｌｔｉｎｓ__",
    "fullwidth-frame": "g = (i for i in ())\nreturn g.ｇｉ_ｆｒａｍｅ",
    "fullwidth-import": "import ｏｓ",
    "fullwidth-globals-kw": "return dict(__ｇｌｏｂａｌｓ__=1)",
    "math-italic-globals": "return run.__𝑔𝑙𝑜𝑏𝑎𝑙𝑠__",
    "ligature-file": "return __ﬁle__",
    "fullwidth-private": "return ctx.ｓｔａｔｅ._ｄａｔａ",
    "fullwidth-reserved": "return _ｗａｌｌｅ_attr",
    "fullwidth-pattern": "match ctx:\n    case object(__ｃｌａｓｓ__=c):\n        return c",
    "fullwidth-class-method": "class E:\n    def __ｄｅｌ__(self):\n        pass",
}


@pytest.mark.parametrize("case", sorted(NFKC))
def test_unicode_normalised_identifiers_are_checked_as_python_reads_them(
    vm: TaskVM, host: HostCheck, case: str
) -> None:
    outcome = attack(vm, host, body(NFKC[case]))
    assert refused(outcome), outcome.text


def test_non_normalised_strings_reach_nothing(vm: TaskVM, host: HostCheck) -> None:
    # getattr does not NFKC-normalise: the fullwidth name is simply another name.
    outcome = attack(vm, host, body("return getattr((), '__ｃｌａｓｓ__', 'none')"))
    assert refused(outcome) or (outcome.result is not None and outcome.result.output == "none")


# --------------------------------------------------------------------------- attribute rule
@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from("_abcfgiotrxe0123"),
        min_size=1,
        max_size=12,
    ).filter(lambda n: n.isidentifier() and not keyword.iskeyword(n))
)
def test_the_checker_and_the_guest_apply_one_attribute_rule(name: str) -> None:
    guest.P.update(policy.as_data())
    own = frozenset({"run", "ctx", "mine"})  # what the probe task below defines
    for names in (frozenset(), own):
        assert sandbox.attr_allowed(name, names) == guest.attr_allowed(name, names)
        if name.startswith("_") and name not in policy.READABLE_DUNDERS | policy.SAFE_PRIVATE:
            assert not sandbox.attr_allowed(name, names)
        if name.startswith(policy.BLOCKED_ATTR_PREFIXES) or name in policy.BLOCKED_ATTRS:
            assert not sandbox.attr_allowed(name, names)
        if not name.startswith("_") and name not in policy.ATTRIBUTE_NAMES | names:
            assert not sandbox.attr_allowed(name, names)  # an allow-list: unlisted is refused
    tree_ok = True
    try:
        sandbox.check_source(f"def run(ctx):\n    mine = 1\n    return ctx.{name}\n", "<t>")
    except SandboxViolation:
        tree_ok = False
    assert tree_ok == sandbox.attr_allowed(name, own)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(policy.AST_NODES)) | st.text(min_size=1, max_size=10))
def test_the_checker_refuses_every_node_type_it_does_not_list(kind: str) -> None:
    import ast

    cls = getattr(ast, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, ast.AST)) or kind in policy.AST_NODES:
        return
    tree = ast.Module(body=[ast.Expr(value=ast.Constant(1))], type_ignores=[])
    node = cls.__new__(cls)
    tree.body[0].value = node  # type: ignore[assignment]
    with pytest.raises(SandboxViolation, match=r"not allowed|not supported"):
        sandbox._Checker("<t>", frozenset(), frozenset()).visit(tree)


# --------------------------------------------------------------------------- host trust
def test_upload_and_output_caps_count_marshal_back_references(vm: TaskVM, host: HostCheck) -> None:
    # ~1 KiB of marshal bytes that expands to ~10 MiB of JSON on the device.
    for what in ("ctx.upload(bomb)", "return bomb", "ctx.state.set('k', bomb)"):
        outcome = attack(vm, host, body(f"s = 'x' * 1000\nbomb = [s] * 10000\n{what}\nreturn 1"))
        assert outcome.result is not None and not outcome.result.ok, outcome.text
        assert outcome.result.error_type in ("ValueError", "StateFull"), outcome.text


def test_many_small_uploads_are_capped_together(vm: TaskVM, host: HostCheck) -> None:
    outcome = attack(vm, host, body("for i in range(400):\n    ctx.upload('y' * 4000)\nreturn 1"))
    assert outcome.result is not None and outcome.result.error_type == "ValueError"


def _limits() -> boundary.Limits:
    return boundary.Limits(state_bytes=1 << 16, tensor_bytes=1 << 20)


FORGED = {
    "not-marshal": b"\xff\xfe garbage",
    "not-a-dict": marshal.dumps([1, 2]),
    "ok-not-bool": marshal.dumps({"ok": 1}),
    "code-object": marshal.dumps({"ok": True, "output": compile("1", "x", "eval")}),
    "set-output": marshal.dumps({"ok": True, "output": {1, 2}}),
    "backref-bomb": marshal.dumps({"ok": True, "output": [["x" * 1000] * 1000] * 10}),
    "upload-bomb": marshal.dumps({"ok": True, "output": 1, "uploads": [["y" * 1000] * 2000]}),
    "deep": marshal.dumps({"ok": True, "output": eval("[" * 90 + "]" * 90)}),
    "logs-not-str": marshal.dumps({"ok": False, "logs": [1]}),
    "too-many-logs": marshal.dumps({"ok": False, "logs": ["x"] * 10_000}),
    "state-not-tuple": marshal.dumps({"ok": True, "state": {"set": {"k": 1}, "del": []}}),
    "state-key-type": marshal.dumps({"ok": True, "state": {"set": {1: (1, None)}, "del": []}}),
    "state-bomb": marshal.dumps(
        {"ok": True, "state": {"set": {"k": ([["z" * 1000] * 1000], None)}, "del": []}}
    ),
    "budget-unknown": marshal.dumps({"ok": False, "budget": "Nope"}),
    "tensors-not-dict": marshal.dumps({"ok": True, "tensors": [1]}),
    "tensor-bad-item": marshal.dumps({"ok": True, "tensors": {"t": "handle"}}),
    "peak-negative": marshal.dumps({"ok": False, "engine_peak_bytes": -1}),
    "huge-wire": b"\x00" * (64 << 20),
    # str() and JSON refuse such ints: the device could not report the result.
    "huge-int-output": marshal.dumps({"ok": True, "output": [1, 10**5000]}),
    "bytes-upload": marshal.dumps({"ok": True, "uploads": [{"blob": b"raw"}]}),
    "nan-upload": marshal.dumps({"ok": True, "uploads": [[float("nan")]]}),
    # Keys whose hashes all collide would make the host's dict building quadratic.
    "colliding-keys": marshal.dumps({"ok": True, "output": {i << 61: 0 for i in range(1, 9)}}),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_guest_result_is_refused_on_the_host(case: str) -> None:
    resp = boundary.accept(FORGED[case], _limits())
    assert resp["ok"] is False and resp["error_type"] == "InvalidResult", resp
    assert resp["recycle"] is True  # the interpreter that produced it is replaced


BAD_TENSORS = {
    "unknown-dtype": ("float64", (2,), b"\0" * 16),
    "short-bytes": ("float32", (4, 4), b"\0" * 8),
    "long-bytes": ("float32", (1,), b"\0" * 8),
    "negative-dim": ("float32", (-1, -4), b"\0" * 16),
    "huge-shape": ("float32", (1 << 62, 1 << 62), b"\0" * 16),
    "wrapping-shape": ("uint8", (1 << 32, 1 << 32, 0), b""),
    "rank-too-high": ("uint8", (1,) * 20, b"\0"),
    "float-dim": ("uint8", (1.5,), b"\0"),
    "not-bytes": ("uint8", (1,), "x"),
    "over-budget": ("uint8", (2 << 20,), b"\0" * (2 << 20)),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_forged_tensor_bytes_are_refused_on_the_host(case: str) -> None:
    pytest.importorskip("walle_engine")
    with pytest.raises(boundary.InvalidResult):
        boundary.import_tensors({"t": BAD_TENSORS[case]}, 0, 1 << 20)


def test_a_handle_of_another_run_cannot_be_taken(vm: TaskVM) -> None:
    walle_engine = pytest.importorskip("walle_engine")
    from walle_engine import _core

    owner, thief = secrets.randbits(63), secrets.randbits(63)
    handle = _core.export_tensor(walle_engine.np.zeros((4,)).tensor, owner)
    for forged in ({"t": handle}, {"t": handle + 1}, {"t": -1}, {"t": 1 << 70}):
        with pytest.raises(boundary.InvalidResult):
            boundary.import_tensors(forged, thief, 1 << 20)
    assert _core.import_tensor(handle, owner).shape == (4,)  # still the owner's


def test_vm_run_never_raises_for_a_forged_result(vm: TaskVM) -> None:
    vm.load("forged", "def run(ctx):\n    return 1\n", config={"max_failures": 10_000})
    t = vm._task("forged")
    limits = _limits()
    for data in FORGED.values():
        r = vm._finish(t, boundary.accept(data, limits), 1, limits)
        assert isinstance(r, RunResult) and not r.ok
    r = vm._finish(t, {"ok": True, "output": 1, "tensors": {"t": 123456789}}, 7, limits)
    assert not r.ok and r.error_type == "InvalidResult"
    assert vm.run("forged").output == 1


def test_handles_of_a_refused_result_are_dropped_not_leaked(vm: TaskVM) -> None:
    walle_engine = pytest.importorskip("walle_engine")
    from walle_engine import _core

    owner = secrets.randbits(63)
    handle = _core.export_tensor(walle_engine.np.zeros((4,)).tensor, owner)
    data = marshal.dumps({"ok": True, "output": {1, 2}, "tensors": {"t": handle}})
    vm.load("leaky", "def run(ctx):\n    return 1\n", config={"max_failures": 10_000})
    r = vm._finish(vm._task("leaky"), boundary.accept(data, _limits()), owner, _limits())
    assert r.error_type == "InvalidResult"
    assert not _core.drop_exported(handle, owner)  # already freed by the host


def test_state_over_its_cap_is_refused_on_the_host(vm: TaskVM) -> None:
    vm.load("capped", "def run(ctx):\n    return 1\n", config={"state_max_bytes": 1000})
    t = vm._task("capped")
    delta = {"set": {"k": ("v" * 5000, None)}, "del": []}
    r = vm._finish(t, {"ok": True, "output": 1, "state": delta}, 1, _limits())
    assert r.error_type == "StateFull" and vm.state("capped") == {}


# --------------------------------------------------------------------------- cross-task
def test_a_task_cannot_read_another_tasks_config_in_a_shared_interpreter(
    host: HostCheck,
) -> None:
    with TaskVM(1, process_workers=0) as solo:
        solo.load("victim", "def run(ctx):\n    return len(ctx.config)\n", config={"s": SECRET})
        assert solo.run("victim").ok
        for code in (
            "import walle\nreturn str(walle.__dict__)",
            "return str(ctx.config)",
            "return [str(getattr(ctx, n)) for n in dir(ctx) if not n.startswith('_')]",
            "return repr(ctx.state.items()) + repr(ctx.files)",
        ):
            try:
                solo.load("attacker", body(code), config={"max_failures": 1000})
            except SandboxViolation:
                continue
            r = solo.run("attacker")
            assert SECRET not in repr(r), code


def test_monkeypatching_shared_classes_is_refused_at_run_time(vm: TaskVM, host: HostCheck) -> None:
    # Attribute stores go through the guest's store check (the checker's rewrite, and
    # setattr/delattr): never on a class the task did not define, so another task's
    # Counter is never the attacker's code.
    for target in ("collections.Counter", "collections.OrderedDict", "json.JSONDecodeError"):
        outcome = attack(
            vm, host, "import collections, json\n" + body(f"{target}.most_common = len\nreturn 1")
        )
        assert refused(outcome) or not outcome.result.ok, outcome.text


# --------------------------------------------------------------------------- layer 2 alone
def _unchecked_compile(task_id: str, source: str, files: Any, requires: Any = frozenset()):
    """compile_task without the checker: what a checker gap would let through."""
    codes = {"__task__": marshal.dumps(compile(source, f"<task {task_id}>", "exec"))}
    return sandbox.CompiledTask(codes, {f"<task {task_id}>": source})


UNCHECKED = {
    "os-system": "().__class__.__base__.__subclasses__()\n"
    "import os\nos.system('touch CANARY/pwned')",
    "real-import-os": "imp = run.__globals__['__builtins__']['__import__']\n"
    "return imp('os').listdir('/')",
    "real-open": "g = ctx.upload.__globals__\nreturn g['__builtins__']['open']('CANARY/canary.txt').read()",
    "io-open": "import io\nreturn io.open('CANARY/canary.txt').read()",
    "write-file": "import io\nio.open('CANARY/pwned', 'w').write('x')",
    "subprocess": "import subprocess\nreturn subprocess.check_output(['id'])",
    "socket": "import socket\nsocket.socket()",
    "ctypes": "import ctypes",
    "getframe": "import sys\nreturn sys._getframe().f_back.f_globals",
    "gc-walk": "import gc\nreturn [o for o in gc.get_objects() if type(o) is dict]",
    "gc-referrers": "import gc\nreturn gc.get_referrers(ctx)",
    "tb-frame": "try:\n    1/0\nexcept Exception as e:\n    return e.__traceback__.tb_frame.f_back",
    "gen-frame": "g = (i for i in ())\nreturn g.gi_frame",
    "code-new": "c = run.__code__\nreturn c.replace(co_consts=())",
    "marshal-loads": "import marshal\nreturn marshal.loads(b'N')",
    "closure-state": "for c in ctx.upload.__closure__:\n    if type(c.cell_contents).__name__ == '_Run':\n"
    "        c.cell_contents.tensors['t'] = (12345, 4)\nreturn 1",
    "type3": "return type('E', (), {'__del__': lambda s: None})",
    "metaclass": "class M(type):\n    pass\nreturn M",
    "addaudithook": "import sys\nsys.addaudithook(lambda *a: None)",
    "listdir": "import os\nreturn os.listdir('CANARY')",
    "environ-write": "import os\nos.environ['X'] = '1'\nimport subprocess\nsubprocess.run(['true'])",
}


@pytest.mark.parametrize("case", sorted(UNCHECKED))
def test_the_run_time_layer_holds_without_the_checker(
    vm: TaskVM, host: HostCheck, case: str
) -> None:
    with mock.patch("walle_device.vm.vm.compile_task", _unchecked_compile):
        outcome = attack(vm, host, body(UNCHECKED[case]))
    assert not outcome.refused_at_load
    r = outcome.result
    assert r is not None and not r.ok, outcome.text
    assert r.error_type in ("SandboxViolation", "FileAccessRefused", "InvalidResult"), r
    assert not (host.canary / "pwned").exists()


# --------------------------------------------------------------------------- process backend
@pytest.mark.parametrize(
    "case",
    ["subclasses", "func-globals", "gen-frame", "buffer-obj", "monkeypatch-stdlib-class"],
)
def test_the_same_attacks_are_refused_in_the_process_backend(
    vm: TaskVM, host: HostCheck, case: str
) -> None:
    outcome = attack(vm, host, body(WALKS[case]), config={"isolation": "process"})
    assert refused(outcome), outcome.text


@pytest.mark.parametrize("case", ["real-open", "os-system", "socket", "write-file", "getframe"])
def test_process_workers_hold_without_the_checker(vm: TaskVM, host: HostCheck, case: str) -> None:
    with mock.patch("walle_device.vm.vm.compile_task", _unchecked_compile):
        outcome = attack(vm, host, body(UNCHECKED[case]), config={"isolation": "process"})
    assert outcome.result is not None and not outcome.result.ok, outcome.text
    assert not (host.canary / "pwned").exists()


def test_a_bundle_module_cannot_stand_in_for_the_entry_script(vm: TaskVM, host: HostCheck) -> None:
    outcome = attack(
        vm,
        host,
        body("return 'entry'"),
        files={"__task__.py": b"def run(ctx):\n    return 'ESCAPED'\n"},
    )
    assert outcome.result is not None and outcome.result.output == "entry"


ORDINARY_CLASSES = """
from typing import NamedTuple, TypedDict, Generic, TypeVar, Protocol
import dataclasses, functools, collections, collections.abc
T = TypeVar("T")
class P(NamedTuple):
    x: int
    y: int = 2
class D(TypedDict):
    a: int
class Box(Generic[T]):
    def __init__(self, v):
        self.v = v
class Proto(Protocol):
    def go(self) -> int: ...
@dataclasses.dataclass(frozen=True, order=True)
class F:
    a: int
    b: str = "x"
@functools.total_ordering
class O:
    def __init__(self, v):
        self.v = v
    def __eq__(self, o):
        return self.v == o.v
    def __lt__(self, o):
        return self.v < o.v
class M(collections.abc.Mapping):
    def __init__(self):
        self.d = {"a": 1}
    def __getitem__(self, k):
        return self.d[k]
    def __iter__(self):
        return iter(self.d)
    def __len__(self):
        return len(self.d)
class E(ValueError):
    def __init__(self, msg, code):
        super().__init__(msg)
        self.code = code
class S:
    __slots__ = ("a",)
    count = 0
    @property
    def double(self):
        return self.a * 2
    @classmethod
    def make(cls):
        cls.count += 1
        s = cls()
        s.a = 3
        return s
def run(ctx):
    p = P(1)
    try:
        raise E("bad", 7)
    except E as e:
        code = e.code
    s = S.make()
    return [p.x + p.y, D(a=1)["a"], Box(5).v, F(1) < F(2), O(1) < O(2), dict(M()), code, s.double, S.count, isinstance(P, type), type(p) is P, p._asdict()]
"""


def test_ordinary_class_forms_still_work(vm: TaskVM, host: HostCheck) -> None:
    # NamedTuple, TypedDict, Generic, Protocol, dataclass(frozen, order), total_ordering,
    # an ABC subclass, an exception with __init__, __slots__ with a property and a
    # classmethod that sets a class attribute: the rules must not get in their way.
    outcome = attack(vm, host, ORDINARY_CLASSES)
    assert outcome.result is not None and outcome.result.ok, outcome.text
    assert outcome.result.output == [
        3,
        1,
        5,
        True,
        True,
        {"a": 1},
        7,
        6,
        1,
        True,
        True,
        {"x": 1, "y": 2},
    ]


@pytest.mark.parametrize("case", ["real-open", "os-system", "socket", "write-file", "listdir"])
def test_walled_tasks_hold_without_the_checker(vm: TaskVM, host: HostCheck, case: str) -> None:
    with mock.patch("walle_device.vm.vm.compile_task", _unchecked_compile):
        outcome = attack(vm, host, body(UNCHECKED[case]), config={"os_wall": True})
    assert outcome.result is not None and not outcome.result.ok, outcome.text
    assert outcome.result.backend == "process"
    assert not (host.canary / "pwned").exists()


def test_a_walled_task_cannot_read_another_tasks_bundle(vm: TaskVM, host: HostCheck) -> None:
    vm.load("owner", body("return len(ctx.read('model.bin'))"), files={"model.bin": b"IP" * 64})
    path = vm._task("owner").load_spec["paths"]["model.bin"]
    steal = f"g = ctx.upload.__globals__\nreturn g['__builtins__']['open']({path!r}, 'rb').read()"
    with mock.patch("walle_device.vm.vm.compile_task", _unchecked_compile):
        outcome = attack(vm, host, body(steal), config={"os_wall": True})
    assert outcome.result is not None and not outcome.result.ok, outcome.text
    assert outcome.result.error_type in ("FileAccessRefused", "PermissionError")
    assert vm.run("owner").output == 128


def test_the_suite_covers_every_class_with_several_variants() -> None:
    groups = [
        ALL_SPECIAL_METHODS,
        CLASS_BODY_TRICKS,
        PATTERNS,
        FORMAT_TEMPLATES,
        WALKS,
        DYNAMIC,
        NFKC,
        FORGED,
        BAD_TENSORS,
        UNCHECKED,
    ]
    assert all(len(g) >= 5 for g in groups)
    assert sum(map(len, groups)) >= 300


# --------------------------------------------------------------------------- format gadgets
# str.format reads attributes by name; every path to CPython's own method must end at the
# sandbox's formatter, decided on what the lookup returned, not on how it was spelled.
FORMAT_PATHS = {
    "subclass-unbound": "class S(str):\n    pass\nreturn S.format('{0.__class__}', 1)",
    "subclass-getattr": "class S(str):\n    pass\nreturn getattr(S, 'format')('{0.__class__}', 1)",
    "subclass-map": "class S(str):\n    pass\nreturn S.format_map('{x.__class__}', {'x': 1})",
    "super-method": "class S(str):\n    def format(self, *a):\n        return super().format(*a)\n"
    "return S('{0.__class__}').format(1)",
    "super-type": "class S(str):\n    pass\nreturn super(S, S).format('{0.__class__}', 1)",
    "bound-stashed": "f = '{0.__closure__}'.format\nreturn [f][0](ctx.upload)",
    "bound-in-map": "return list(map('{0.__class__}'.format, [1]))",
    "str-type": "return str.format('{0.__globals__}', run)",
    "dtype-str-subclass": "from walle_engine import np\nreturn type(np.float32).format('{0.__class__}', 1)",
}


@pytest.mark.parametrize("case", sorted(FORMAT_PATHS))
def test_every_path_to_str_format_is_the_sandboxs_formatter(
    vm: TaskVM, host: HostCheck, case: str
) -> None:
    outcome = attack(vm, host, body(FORMAT_PATHS[case]))
    assert refused(outcome), outcome.text
    assert "cell" not in outcome.text and "class 'int'" not in outcome.text


# --------------------------------------------------------------------------- shared objects
# Everything a module proxy hands out is shared by every task of the interpreter; a store on
# it, or one that stdlib code forwards to it (typing's aliases set attributes on their origin
# class), would plant code that another task's run calls.
SHARED_STORES = {
    "typing-alias-origin": "import typing\ntyping.Counter.most_common = len",
    "typing-subscripted": "import typing\ntyping.Counter[str].most_common = len",
    "typing-abc-alias": "import typing\nsetattr(typing.Mapping, 'get', len)",
    "module-function": "import json\njson.dumps.cache = {}",
    "engine-dtype": "from walle_engine import np\nnp.float32.upper = lambda: 'x'",
    "guest-function": "import time\ntime.sleep.x = 1",
    "partial-object": "import functools\nfunctools.partial(abs).x = 1",
    "stdlib-instance": "import datetime\ndatetime.UTC.x = 1",
    "dataclass-shared": "import dataclasses, fractions\ndataclasses.dataclass(fractions.Fraction)",
    "namedtuple-spoofed-module": "import collections\n"
    "P = collections.namedtuple('P', 'x', module='collections')\nP.y = 1",
    "abc-register": "import collections.abc\ncollections.abc.Sequence.register(dict)",
}


@pytest.mark.parametrize("case", sorted(SHARED_STORES))
def test_shared_objects_are_read_only(vm: TaskVM, host: HostCheck, case: str) -> None:
    outcome = attack(vm, host, body(SHARED_STORES[case] + "\nreturn 1"))
    assert refused(outcome), outcome.text
    probe = "import collections, collections.abc\ndef run(ctx):\n" + (
        "    return [collections.Counter('aab').most_common(1), isinstance({}, collections.abc.Sequence)]\n"
    )
    vm.load("probe-shared", probe)
    assert vm.run("probe-shared").output == [[("a", 2)], False]


def test_own_objects_still_take_attributes(vm: TaskVM, host: HostCheck) -> None:
    outcome = attack(
        vm,
        host,
        """
        import collections.abc
        class Box:
            pass
        class Seq(collections.abc.Sequence):
            def __len__(self):
                return 0
            def __getitem__(self, i):
                raise IndexError(i)
        class Plain:
            pass
        def run(ctx):
            b = Box()
            b.v = 1
            Box.kind = "box"
            def f():
                return 1
            f.cache = {}
            e = ValueError("x")
            e.code = 7
            collections.abc.Sequence.register(Plain)
            return [b.v, Box.kind, f.cache, e.code, isinstance(Plain(), collections.abc.Sequence)]
        """,
    )
    assert outcome.result is not None and outcome.result.output == [1, "box", {}, 7, True]


@pytest.mark.parametrize(
    "store",
    [
        "import typing\ntyping.Counter.most_common = len",
        "import collections\ncollections.Counter.most_common = len",
        "import collections.abc\ncollections.abc.Sequence.register(dict)",
        "import fractions\nsetattr(fractions.Fraction, 'limit_denominator', len)",
    ],
)
def test_the_run_time_layer_restores_shared_classes_without_the_checker(
    vm: TaskVM, host: HostCheck, store: str
) -> None:
    # CPython raises no audit event for a class attribute store: the guest compares every
    # shared class with its snapshot after each run instead, and replaces the interpreter.
    with mock.patch("walle_device.vm.vm.compile_task", _unchecked_compile):
        outcome = attack(vm, host, body(store + "\nreturn 1"))
    assert outcome.result is not None and not outcome.result.ok, outcome.text
    assert outcome.result.error_type == "SandboxViolation", outcome.text
    probe = "import collections, collections.abc, fractions\ndef run(ctx):\n" + (
        "    return [collections.Counter('aab').most_common(1), "
        "isinstance({}, collections.abc.Sequence), fractions.Fraction(1, 3).limit_denominator(2)"
        " == fractions.Fraction(1, 2)]\n"
    )
    for _ in range(3):  # every worker
        vm.load("probe-classes", probe)
        assert vm.run("probe-classes").output == [[("a", 2)], False, True]


@pytest.mark.parametrize("order", ["task-module-first", "shared-module-first"])
def test_a_shared_module_imported_beside_a_task_module_is_still_watched(order: str) -> None:
    # A task's own module entering sys.modules does not make the watch rescan every module
    # (that rescan was most of a task's first run), but a shared module imported in the
    # same run, before or after it, must still be snapshotted and its classes checked.
    import sys
    import types

    watch = guest.ClassWatch()
    shared = types.ModuleType(f"walle_test_shared_{order.replace('-', '_')}")
    exec("class Shared:\n    pass\n", shared.__dict__)
    task_name = f"walle_task.watch-{order}.__task__"
    try:
        if order == "shared-module-first":
            sys.modules[shared.__name__] = shared
        sys.modules[task_name] = types.ModuleType(task_name)
        watch.task_module(+1)
        if order == "task-module-first":
            assert watch.modules == len(sys.modules)  # nothing shared came in: no rescan due
            sys.modules[shared.__name__] = shared
        watch.refresh()
        assert any(cls is shared.Shared for cls in watch.classes)
        assert watch.changed() == ""
        shared.Shared.planted = len
        assert "Shared" in watch.changed()
    finally:
        sys.modules.pop(shared.__name__, None)
        sys.modules.pop(task_name, None)


def test_random_state_is_per_task(vm: TaskVM, host: HostCheck) -> None:
    # One task seeding the shared generator would make another's draws predictable.
    vm.load("draws", "import random\ndef run(ctx):\n    return random.getrandbits(64)\n")
    seeded = (
        "import random\ndef run(ctx):\n    random.seed(42)\n    return random.getrandbits(64)\n"
    )
    outcome = attack(vm, host, seeded)
    assert outcome.result is not None and outcome.result.ok
    fixed = outcome.result.output
    draws = set()
    for _ in range(6):
        attack(vm, host, seeded)
        draws.add(vm.run("draws").output)
    assert fixed not in draws and len(draws) == 6


# --------------------------------------------------------------------------- task code after the budget
# Formatting an exception may call task code: its own __str__, or what a builtin exception
# formats (OSError's filename, SyntaxError's msg, a str subclass as ExceptionGroup's message).
# It runs under the budget and the audit gate, never after: the run ends within its budget
# instead of leaving its worker stuck, and the error keeps its type.
LOOP_CLASS = "class Loop(str):\n    def __str__(self):\n        while True:\n            pass\n" + (
    "    def __repr__(self):\n        while True:\n            pass\n"
)
LATE_CODE = {
    "oserror-filename": ("OSError", "raise OSError(5, 'io', Loop('f'))"),
    "syntaxerror-msg": ("SyntaxError", "e = SyntaxError('x')\ne.msg = Loop('m')\nraise e"),
    "group-message": ("ExceptionGroup", "raise ExceptionGroup(Loop('m'), [ValueError(1)])"),
    "keyerror-repr": ("KeyError", "raise KeyError(Loop('k'))"),
    "own-str": (
        "Own",
        "class Own(Exception):\n    def __str__(self):\n        while True:\n"
        "            pass\nraise Own('kept')",
    ),
    "huge-int-arg": ("ValueError", "raise ValueError(10 ** 5000)"),
    "state-delete-object": ("TypeError", "ctx.state.delete(Loop('k'))\nreturn 1"),
}


@pytest.mark.parametrize("case", sorted(LATE_CODE))
@pytest.mark.parametrize("isolation", ["interpreter", "process"])
def test_no_task_code_runs_after_the_budget(
    vm: TaskVM, host: HostCheck, case: str, isolation: str
) -> None:
    error_type, code = LATE_CODE[case]
    before = vm.stats()
    outcome = attack(
        vm, host, LOOP_CLASS + body(code), config={"timeout_s": 0.5, "isolation": isolation}
    )
    r = outcome.result
    assert r is not None and r.error_type == error_type, outcome.text
    # Not stuck: a run that does not stop is answered as TaskTimeout, its worker abandoned
    # (interpreter) or killed (process).
    assert not r.timed_out
    assert vm.stats()["abandoned_workers"] == before["abandoned_workers"], "a worker got stuck"


def test_tracebacks_are_bounded(vm: TaskVM, host: HostCheck) -> None:
    # Two functions recursing into each other on one long line: formatting every frame of
    # it (with column carets, which re-parse each line) would run long after the budget.
    long_expr = ", ".join(["n"] * 20000)
    source = f"def f(n):\n    return g(n) + len([{long_expr}])\ndef g(n):\n    return f(n)\n"
    outcome = attack(vm, host, source + body("return f(0)"))
    r = outcome.result
    assert r is not None and r.error_type == "RecursionError", outcome.text
    assert r.traceback.count("File ") <= 30 and len(r.traceback) < 20_000


# --------------------------------------------------------------------------- data the host receives
HOST_DATA = {
    "huge-int-output": ("return [1, 10 ** 5000]", "ValueError"),
    "huge-int-state": ("ctx.state.set('k', 10 ** 5000)\nreturn 1", "ValueError"),
    "huge-int-upload": ("ctx.upload(10 ** 20000)\nreturn 1", "ValueError"),
    "bytes-upload": ("ctx.upload({'blob': b'raw'})\nreturn 1", "TypeError"),
    "nan-upload": ("ctx.upload([float('nan')])\nreturn 1", "ValueError"),
    "inf-key-upload": ("ctx.upload({float('inf'): 1})\nreturn 1", "ValueError"),
    "colliding-keys": ("P = 2 ** 61 - 1\nreturn {i * P: 0 for i in range(1, 50)}", "ValueError"),
    "incr-huge": (
        "class A:\n    def __radd__(self, o):\n        return 10 ** 5000\n"
        "ctx.state.incr('a', A())\nreturn 1",
        "ValueError",
    ),
}


@pytest.mark.parametrize("case", sorted(HOST_DATA))
def test_what_the_host_receives_is_reportable(vm: TaskVM, host: HostCheck, case: str) -> None:
    code, error_type = HOST_DATA[case]
    outcome = attack(vm, host, body(code))
    r = outcome.result
    assert r is not None and r.error_type == error_type, outcome.text
    repr(r)  # the device formats and sends what it gets
    json.dumps([r.output, r.uploads, r.message])


# --------------------------------------------------------------------------- host buffers
def test_a_host_buffer_does_not_outlive_the_run(vm: TaskVM, host: HostCheck) -> None:
    # A task that keeps a view of ctx.buffers (or an array or tensor over it) would read what
    # the host puts in that memory later, and keep the host from resizing it: its
    # interpreter is replaced instead.
    vm.load(
        "keeper",
        "from walle_engine import np\nKEEP = []\ndef run(ctx):\n"
        "    KEEP.extend([ctx.buffers['b'][1:], np.asarray(ctx.buffers['b'])])\n"
        "    return len(KEEP)\n",
    )
    frame = bytearray(b"frame-1")
    for _ in range(4):
        r = vm.run("keeper", buffers={"b": frame})
        assert r.ok and r.output == 2, r  # never a previous run's view
        assert any("kept a reference to ctx.buffers" in line for line in r.logs)
    frame.extend(b" and more")  # BufferError while any view is alive
    assert host.vm.run("probe").output == 45


# --------------------------------------------------------------------------- C recursion
# CPython 3.13 counts rather than measures C recursion, and some of its C code does not
# count at all. Nesting 400k of these crashed the device process with the default 8 MiB
# thread stack; the VM's workers have a stack the memory budget cannot exhaust. In a child
# process, so that a regression is a failed test, not a dead test runner.
NESTED = {
    "map-next": "g = iter([1])\nfor i in range(N):\n    g = map(abs, g)\nreturn list(g)",
    "zip-next": "g = [1]\nfor i in range(N):\n    g = zip(g)\nreturn len(list(g))",
    "filter-next": "g = [1]\nfor i in range(N):\n    g = filter(None, g)\nreturn list(g)",
    "enumerate-next": "g = [1]\nfor i in range(N):\n    g = enumerate(g)\nreturn len(list(g))",
    "chain-via-type": "import collections\nC = type(collections.Counter('a').elements())\n"
    "g = [1]\nfor i in range(N):\n    g = C(g)\nreturn list(g)",
    "tuple-hash": "t = ()\nfor i in range(N):\n    t = (t,)\nreturn hash(t) and 1",
    "deque-dealloc": "import collections\nd = collections.deque()\nfor i in range(N):\n"
    "    d = collections.deque([d])\nreturn 1",
    "cmp-to-key-dealloc": "import functools\nc = lambda a, b: 0\nfor i in range(N):\n"
    "    c = functools.cmp_to_key(c)\nreturn 1",
    "generator-close": "g = iter([1])\nfor i in range(N):\n    g = (x for x in g)\nnext(g)\nreturn 1",
}
NESTED_DEVICE = """
import json, sys
from walle_device.vm import TaskVM
if __name__ == "__main__":
    cases = json.loads(sys.argv[1])
    with TaskVM(1, process_workers=0) as vm:
        for name, code in cases.items():
            vm.load(name, code, config={"timeout_s": 60, "max_memory_mb": 4096})
            r = vm.run(name)
            print(json.dumps([name, r.ok, r.error_type]), flush=True)
"""


def test_deep_nesting_in_c_does_not_crash_the_device(tmp_path: Path) -> None:
    import subprocess
    import sys

    cases = {n: "N = 400_000\n" + body(c) for n, c in NESTED.items()}
    script = tmp_path / "device.py"
    script.write_text(NESTED_DEVICE)
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[2],
    )
    done = [json.loads(line)[0] for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, (done, proc.stderr[-2000:])
    assert done == list(cases)


# --------------------------------------------------------------------------- the checker's edges
def test_a_source_the_parser_cannot_hold_is_a_refusal(vm: TaskVM) -> None:
    # "Parser stack overflowed" is a MemoryError from ast.parse; load() raises only
    # SandboxViolation or ValueError.
    for source in ("x = " + "-" * 300_000 + "1\n", "x = " + "(" * 300_000 + ")" * 300_000):
        with pytest.raises(SandboxViolation, match=r"nested too deeply|syntax error"):
            vm.load("deep", source)


def test_the_check_command_refuses_cleanly(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "latin1.py").write_bytes(b"x = '\xff'\n")
    (tmp_path / "deep.py").write_text("x = " + "-" * 300_000 + "1\n")
    (tmp_path / "ok.py").write_text("import helper\ndef run(ctx):\n    return helper.f()\n")
    (tmp_path / "helper.py").write_text("def f():\n    return 1\n")
    cmd = [sys.executable, "-m", "walle_device.vm", "check"]
    for name, extra, rc in (
        ("latin1.py", [], 1),
        ("deep.py", [], 1),
        ("missing.py", [], 1),
        ("ok.py", ["--file", f"helper.py={tmp_path / 'helper.py'}"], 0),
    ):
        p = subprocess.run([*cmd, str(tmp_path / name), *extra], capture_output=True, text=True)
        assert p.returncode == rc, (name, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr


def test_the_suite_covers_the_classes_found_after_issue_12() -> None:
    groups = [FORMAT_PATHS, SHARED_STORES, LATE_CODE, HOST_DATA, NESTED]
    assert all(len(g) >= 5 for g in groups)
