"""The checker's attribute allow-list: computed from the policy (surface.py), kept as data
(policy.ATTRIBUTE_NAMES), extended only by the names a task defines itself, and loose
enough for the scripts tasks are actually written as."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

from walle_device.vm import SandboxViolation, TaskVM, policy, sandbox, surface

ROOT = Path(__file__).resolve().parents[2]


def test_the_attribute_list_is_the_one_computed_from_the_policy() -> None:
    now = surface.compute()
    added, gone = sorted(now - policy.ATTRIBUTE_NAMES), sorted(policy.ATTRIBUTE_NAMES - now)
    assert not added and not gone, (
        f"policy.ATTRIBUTE_NAMES is out of date (new: {added}, gone: {gone}); review the "
        "change and run `python -m walle_device.vm.surface --write`"
    )


def test_the_list_holds_no_blocked_name() -> None:
    for name in policy.ATTRIBUTE_NAMES:
        assert not name.startswith("_") and name.isidentifier()
        assert name not in policy.BLOCKED_ATTRS
        assert not name.startswith(policy.BLOCKED_ATTR_PREFIXES)


def _scripts() -> dict[str, str]:
    """Task scripts as the project writes them: the examples of docs/task-authoring.md and
    the demo's tasks."""
    from walle_web.management.commands import demo

    doc = (ROOT / "docs" / "task-authoring.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "def run(ctx)" in b]
    assert len(blocks) >= 2
    scripts = {f"doc-{i}": b for i, b in enumerate(blocks)}
    scripts.update({n: getattr(demo, n) for n in ("DEMO_V1", "DEMO_V2", "ITEM_VIEWS")})
    return scripts


def test_the_documented_and_demo_scripts_pass_the_checker() -> None:
    for name, source in _scripts().items():
        sandbox.compile_task(name, source, {})


OWN = """
import collections, typing
from math import sqrt as root
Point = collections.namedtuple("Point", "px py")
Pair = collections.namedtuple("Pair", ["left", "right"])
class Row(typing.NamedTuple):
    cell: int
class Box:
    __slots__ = ("slot",)
    def method(self, param, *rest, kwonly=1, **extra):
        self.stored = param
def run(ctx):
    global counted
    counted = 1
    for looped in range(1):
        pass
    with open_thing() as managed:
        pass
    try:
        pass
    except ValueError as caught:
        pass
    match ctx.inputs:
        case {"k": captured, **others}:
            pass
    walrus = (assigned := 1)
    return dict(keyworded=1)
"""


def test_the_names_a_task_defines_are_its_to_use() -> None:
    names = sandbox.task_names([ast.parse(OWN)])
    expected = {
        "Point", "px", "py", "Pair", "left", "right", "Row", "cell", "Box", "slot", "method",
        "param", "rest", "kwonly", "extra", "stored", "run", "ctx", "counted", "looped",
        "managed", "caught", "captured", "others", "walrus", "assigned", "keyworded", "root",
        "collections", "typing",
    }  # fmt: skip
    assert expected <= names
    assert "inputs" not in names  # read, never defined: it comes from the policy's list
    assert not {n for n in names if n.startswith("_")}


@pytest.mark.parametrize(
    "probe",
    [
        "return (1).shadow_attr",
        "return getattr(ctx, 'shadow' + '_attr', None)",
        "return '{0.shadow_attr}'.format(ctx)",
        "match ctx:\n    case object(shadow_attr=x):\n        return x",
    ],
)
def test_a_name_nobody_lists_or_defines_is_refused(probe: str) -> None:
    # Unlisted, undefined: refused by the checker, or by the guest's getattr and formatter
    # when the name is computed at run time.
    source = "def run(ctx):\n" + textwrap.indent(probe, "    ") + "\n"
    with TaskVM(1, process_workers=0) as vm:
        try:
            vm.load("probe", source)
        except SandboxViolation as e:
            assert "shadow_attr" in str(e)
            return
        r = vm.run("probe")
    assert r.error_type == "SandboxViolation" and "shadow_attr" in r.message, r


def test_a_name_the_task_defines_works_at_run_time_too() -> None:
    source = (
        "class Box:\n    def __init__(self):\n        self.shadow_attr = 7\n"
        "def run(ctx):\n    b = Box()\n"
        "    return [b.shadow_attr, getattr(b, 'shadow' + '_attr'), '{0.shadow_attr}'.format(b)]\n"
    )
    with TaskVM(1, process_workers=0) as vm:
        vm.load("own", source)
        assert vm.run("own").output == [7, 7, "7"]


def test_numpy_tasks_get_the_installed_numpys_surface() -> None:
    pytest.importorskip("numpy")
    names = surface.numpy_names()
    assert {"ndarray", "reshape", "linalg", "svd", "default_rng", "integers"} <= names
    assert not names & {"load", "save", "fromfile", "tofile", "ctypes", "ctypeslib"}
