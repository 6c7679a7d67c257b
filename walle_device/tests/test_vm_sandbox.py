"""Escape suite: known tricks for leaving a Python sandbox, each refused with a clear error.

Each case is either refused when the task is loaded (the static check names the file and
line) or at run time (the restricted builtins, module proxies and attribute guard). A
trick that "works" would return the sentinel ESCAPED, so the assertions also prove that
nothing reached the host.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest

from walle_device.vm import SandboxViolation, TaskVM


@pytest.fixture(scope="module")
def vm() -> Iterator[TaskVM]:
    with TaskVM(2, process_workers=0) as v:
        v.wait_ready()
        yield v


# (case id, task source, expected message fragment) — refused by vm.load()
REFUSED_AT_LOAD = [
    ("import-os", "import os", "import of 'os' is not allowed"),
    ("import-subprocess", "import subprocess", "import of 'subprocess'"),
    ("import-socket", "import socket", "import of 'socket'"),
    ("import-ctypes", "import ctypes", "import of 'ctypes'"),
    ("from-os-import", "from os import path", "import of 'os'"),
    ("importlib", "import importlib\nimportlib.import_module('os')", "import of 'importlib'"),
    ("io-open", "import io\nio.open('/etc/passwd')", "import of 'io'"),
    ("sys-modules", "import sys\nsys.modules['os']", "import of 'sys'"),
    ("submodule-of-allowed", "import json.decoder", "import of 'json.decoder'"),
    ("relative-import", "from . import secrets", "relative imports are not allowed"),
    ("dunder-import", "__import__('os')", "__import__ is not available"),
    ("builtins-name", "__builtins__['open']", "'__builtins__' is not allowed"),
    ("open", "open('/etc/passwd').read()", "open is not available"),
    ("eval", "eval('1 + 1')", "eval is not available"),
    ("exec", "exec('import os')", "exec is not available"),
    ("compile", "compile('1', 'x', 'eval')", "compile is not available"),
    ("globals", "globals()['__builtins__']", "globals is not available"),
    ("vars", "def run(ctx):\n    return vars(ctx)", "vars is not available"),
    ("breakpoint", "breakpoint()", "breakpoint is not available"),
    ("subclasses-walk", "().__class__.__bases__[0].__subclasses__()", "'__class__'"),
    ("rename-module", "import json\njson.__name__ = 'os'", "setting attribute '__name__'"),
    ("rebind-name", "__name__ = 'json'", "'__name__' is not allowed"),
    ("from-import-module", "from json import decoder", "json.decoder is not available"),
    ("type-subclasses", "type.__subclasses__(object)", "'__subclasses__'"),
    ("func-globals", "def run(ctx):\n    return run.__globals__['__builtins__']", "'__globals__'"),
    ("code-object", "def run(ctx):\n    return (lambda: 0).__code__.co_consts", "'__code__'"),
    ("code-replace", "def f(): pass\nf.__code__ = None", "'__code__'"),
    ("bound-method-self", "def run(ctx):\n    return ctx.log.__self__", "'__self__'"),
    ("builtin-self", "print.__self__.open", "'__self__'"),
    (
        "gen-frame-back",
        "def g():\n    yield 1\ndef run(ctx):\n    return g().gi_frame.f_back.f_globals",
        "'gi_frame'",
    ),
    (
        "coroutine-frame",
        "async def c(): pass\ndef run(ctx):\n    return c().cr_frame",
        "async code is not supported",
    ),
    (
        "generator-finally-after-budget",
        "def g():\n    try:\n        yield 1\n    finally:\n        while True: pass",
        "yield inside try/with",
    ),
    (
        "generator-with-after-budget",
        "def g(cm):\n    with cm:\n        yield 1",
        "yield inside try/with",
    ),
    (
        "traceback-frame",
        "def run(ctx):\n    try:\n        1/0\n    except Exception as e:\n"
        "        return e.__traceback__.tb_frame.f_globals",
        "'__traceback__'",
    ),
    ("frame-builtins", "def run(ctx, f=None):\n    return f.f_builtins", "'f_builtins'"),
    ("private-module-attr", "import random\nrandom._os.system('id')", "'_os'"),
    ("private-api-attr", "def run(ctx):\n    return ctx._task", "'_task'"),
    ("dict-of-object", "def run(ctx):\n    return ctx.state.__dict__", "'__dict__'"),
    ("unicode-dunder", "().__ｃｌａｓｓ__", "'__class__'"),
    (
        "match-class-attr",
        "def run(ctx):\n    match ctx:\n        case object(__class__=c):\n            return c",
        "'__class__'",
    ),
    ("dunder-keyword", "def run(ctx):\n    return dict(__globals__=1)", "'__globals__'"),
    ("define-del", "class X:\n    def __del__(self):\n        pass", "__del__"),
    (
        "annotations-dunder",
        "class X:\n    __annotations__ = {'__globals__': object}",
        "'__annotations__'",
    ),
    ("star-import", "from math import *", "'import *'"),
    (
        "engine-file-api",
        "from walle_engine import import_profile",
        "walle_engine.import_profile is not available",
    ),
    ("engine-private-core", "import walle_engine._core", "import of 'walle_engine._core'"),
    ("numpy-file-submodule", "import numpy.lib.format", "import of 'numpy.lib.format'"),
    ("ndarray-tofile", "def run(ctx, a=None):\n    a.tofile('/tmp/x')", "'tofile'"),
    ("ndarray-dump", "def run(ctx, a=None):\n    a.dump('/tmp/x')", "'dump'"),
    ("ndarray-ctypes", "def run(ctx, a=None):\n    return a.ctypes.data", "'ctypes'"),
    ("reserved-name", "_walle_attr", "reserved"),
    (
        "match-guarded-attr",
        "def run(ctx):\n    match ctx.buffers['b']:\n"
        "        case memoryview(obj=o):\n            return o",
        "cannot match attribute 'obj'",
    ),
]


@pytest.mark.parametrize(
    ("code", "expected"), [c[1:] for c in REFUSED_AT_LOAD], ids=[c[0] for c in REFUSED_AT_LOAD]
)
def test_trick_is_refused_at_load(vm: TaskVM, code: str, expected: str) -> None:
    with pytest.raises(SandboxViolation, match=r"<task esc>:\d+: ") as info:
        vm.load("esc", code + "\n")
    assert expected in str(info.value)


# (case id, body of run(ctx), expected error type, message fragment) — refused at run time
REFUSED_AT_RUN = [
    (
        "getattr-dunder",
        "return getattr((), '__cla' + 'ss__')",
        "SandboxViolation",
        "'__class__' is not allowed",
    ),
    (
        "getattr-frame",
        "g = (i for i in ())\nreturn getattr(g, 'gi_' + 'frame')",
        "SandboxViolation",
        "'gi_frame'",
    ),
    ("getattr-default", "return getattr(ctx, '_' + 'task', None)", "SandboxViolation", "'_task'"),
    ("hasattr-private", "return hasattr(ctx.state, '_' + 'data')", "SandboxViolation", "'_data'"),
    ("setattr-private", "setattr(ctx, '_' + 'watchdog', None)", "SandboxViolation", "'_watchdog'"),
    (
        "reduce-getattr",
        "import functools\nreturn functools.reduce(getattr, ['__class__'], ())",
        "SandboxViolation",
        "'__class__'",
    ),
    ("format-attr", "return '{0.__class__.__base__}'.format(1)", "SandboxViolation", "'__class__'"),
    (
        "format-frame",
        "g = (i for i in ())\nreturn '{0.gi_frame}'.format(g)",
        "SandboxViolation",
        "'gi_frame'",
    ),
    ("format-via-type", "return str.format('{0.__class__}', 1)", "SandboxViolation", "'__class__'"),
    (
        "format-map",
        "return '{x.__class__}'.format_map({'x': 1})",
        "SandboxViolation",
        "'__class__'",
    ),
    (
        "format-getattr-alias",
        "f = getattr('{0.__class__}', 'format')\nreturn f(1)",
        "SandboxViolation",
        "'__class__'",
    ),
    (
        "module-attr-codecs",
        "import json\nreturn json.codecs.open('/etc/passwd')",
        "SandboxViolation",
        "json.codecs is not available",
    ),
    (
        "module-attr-sys",
        "import typing\nreturn typing.sys.modules['os']",
        "SandboxViolation",
        "typing.sys is not available",
    ),
    (
        "import-from-fallback",
        "import collections\nreturn collections.abc.sys",
        "SandboxViolation",
        "collections.abc.sys is not available",
    ),
    (
        "attrgetter",
        "import operator\nreturn operator.attrgetter('__class__')(1)",
        "SandboxViolation",
        "operator.attrgetter is not available",
    ),
    (
        "get-type-hints-eval",
        "import typing\nreturn typing.get_type_hints(run)",
        "SandboxViolation",
        "typing.get_type_hints is not available",
    ),
    (
        "update-wrapper",
        "import functools\nreturn functools.update_wrapper",
        "SandboxViolation",
        "functools.update_wrapper is not available",
    ),
    (
        "make-dataclass",
        "import dataclasses\nreturn dataclasses.make_dataclass",
        "SandboxViolation",
        "dataclasses.make_dataclass is not available",
    ),
    (
        "buffer-exporter",
        "return memoryview(ctx.buffers['b'].obj)",
        "SandboxViolation",
        "memoryview.obj is not available",
    ),
    (
        "buffer-exporter-getattr",
        "return getattr(ctx.buffers['b'], 'obj')",
        "SandboxViolation",
        "memoryview.obj is not available",
    ),
    (
        "monkeypatch-module",
        "import json\njson.dumps = len",
        "SandboxViolation",
        "module 'json' is read-only",
    ),
    (
        "monkeypatch-api-class",
        "type(ctx.state).get = lambda self, k, d=None: 'stolen'",
        "SandboxViolation",
        "the class State is shared by every task",
    ),
    (
        "open-alias-via-builtins-dict",
        "import walle\nreturn walle.open",
        "SandboxViolation",
        "walle.open is not available",
    ),
]


@pytest.mark.parametrize(
    ("body", "error_type", "expected"),
    [c[1:] for c in REFUSED_AT_RUN],
    ids=[c[0] for c in REFUSED_AT_RUN],
)
def test_trick_is_refused_at_run(vm: TaskVM, body: str, error_type: str, expected: str) -> None:
    code = "def run(ctx):\n" + textwrap.indent(body, "    ") + "\n"
    vm.load("esc-run", code, config={"max_failures": 10_000})
    r = vm.run("esc-run", buffers={"b": b"host memory"})
    assert not r.ok, f"escaped: {r.output!r}"
    assert r.error_type == error_type, r.traceback
    assert expected in r.message


def test_the_escape_suite_is_at_least_twenty_tricks() -> None:
    assert len(REFUSED_AT_LOAD) + len(REFUSED_AT_RUN) >= 20


def test_ctx_exposes_only_the_task_api(vm: TaskVM) -> None:
    vm.load("dir", "def run(ctx):\n    return [n for n in dir(ctx) if not n.startswith('_')]\n")
    r = vm.run("dir")
    assert sorted(r.output) == [
        "buffers",
        "config",
        "device",
        "files",
        "inputs",
        "log",
        "model",
        "read",
        "return_tensor",
        "state",
        "task_id",
        "time_left",
        "upload",
        "window",
    ]


def test_ctx_device_carries_the_attributes_the_host_passes(vm: TaskVM) -> None:
    vm.load("who", "def run(ctx):\n    return ctx.device.get('model')\n")
    assert vm.run("who", device={"model": "Pixel 8", "id": "dev-1"}).output == "Pixel 8"
    assert vm.run("who").output is None


def test_ordinary_code_still_works(vm: TaskVM) -> None:
    # The rules must not get in the way of normal task code.
    vm.load(
        "ordinary",
        textwrap.dedent("""
        from __future__ import annotations
        import collections, dataclasses, functools, itertools, json, math, re, statistics
        from collections.abc import Mapping
        from typing import Any

        @dataclasses.dataclass
        class Hit:
            item: str
            score: float

        class Ranker:
            def __init__(self, k: int) -> None:
                self.k = k

            def __repr__(self) -> str:
                return f"Ranker(k={self.k})"

            def top(self, hits: list[Hit]) -> list[Hit]:
                return sorted(hits, key=lambda h: -h.score)[: self.k]

        Point = collections.namedtuple("Point", "x y")

        @functools.lru_cache(maxsize=None)
        def fib(n: int) -> int:
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        def run(ctx: Any) -> dict[str, Any]:
            hits = [Hit(e["item"], e["score"]) for e in ctx.window]
            top = Ranker(2).top(hits)
            words = re.findall(r"\\w+", "a b a c")
            match ctx.inputs:
                case {"mode": "full"}:
                    mode = "full"
                case _:
                    mode = "lite"
            return {
                "top": [dataclasses.asdict(h) for h in top],
                "counts": dict(collections.Counter(words)),
                "mean": statistics.mean(h.score for h in hits),
                "pairs": len(list(itertools.combinations(range(4), 2))),
                "fib": fib(30), "json": json.dumps({"a": 1}), "sqrt": math.isqrt(17),
                "point": Point(1, 2)._replace(y=5)._asdict(),
                "fields": Point._fields,
                "name": type(top[0]).__name__, "repr": repr(Ranker(3)), "mode": mode,
                "fmt": "{:.1f}|{name}".format(2.25, name="x"), "isinstance": isinstance(ctx.inputs, Mapping),
            }
    """),
    )
    r = vm.run(
        "ordinary",
        {"mode": "full"},
        window=[
            {"item": "a", "score": 0.5},
            {"item": "b", "score": 0.9},
            {"item": "c", "score": 0.1},
        ],
    )
    assert r.ok, r.traceback
    assert r.output["top"] == [{"item": "b", "score": 0.9}, {"item": "a", "score": 0.5}]
    assert r.output["counts"] == {"a": 2, "b": 1, "c": 1}
    assert r.output["fib"] == 832040 and r.output["pairs"] == 6 and r.output["sqrt"] == 4
    assert r.output["name"] == "Hit" and r.output["repr"] == "Ranker(k=3)"
    assert r.output["point"] == {"x": 1, "y": 5} and r.output["fields"] == ("x", "y")
    assert r.output["fmt"] == "2.2|x" and r.output["mode"] == "full" and r.output["isinstance"]
