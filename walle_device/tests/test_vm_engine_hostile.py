"""Engine memory safety as a task reaches it through the VM: hostile sizes and shapes passed
to `walle_engine` from task code.

Each case runs in a child process that plays the device: a crash there is a failed test,
not a dead test runner. The cases in CASES crashed or mis-sized tensors before the engine
checked its size arithmetic (the engine's work, not the VM's: DESIGN.md §6 layer 3); they
are now refused with a clean Python error.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("walle_engine")

ROOT = Path(__file__).resolve().parents[2]

DEVICE = """
import json, sys
from walle_device.vm import TaskVM
if __name__ == "__main__":
    with TaskVM(1, process_workers=0) as vm:
        for name, source in json.loads(sys.argv[1]).items():
            vm.load(name, source, config={"timeout_s": 30})
            r = vm.run(name)
            print(json.dumps([name, r.ok, r.error_type, r.message[:300]]), flush=True)
"""
HEAD = "import walle_engine\nfrom walle_engine import cv, np, ops\ndef run(ctx):\n"

CRASHES = "SIGSEGV in the device process, reproduced here (walle_engine size arithmetic)"
MIS_SIZED = "the engine's size arithmetic wraps: a huge shape over a tiny buffer"

CASES = {
    # element counts past 2**62: the size computation overflows before the account's cap
    # check, and the allocation that follows is too small for what is written into it
    "arange-huge": ("return np.arange(0, 2**62, 1).shape", CRASHES),
    "linspace-huge": ("return np.linspace(0, 1, 2**62).shape", CRASHES),
    "full-huge": ("return np.full((2**62,), 1).shape", CRASHES),
    "eye-huge": ("return np.eye(2**31).shape", CRASHES),
    # accepted today with a wrapped byte size; reads are bounds-checked against the real
    # buffer, but the shape is a lie to everything downstream
    "zeros-wrapping-shape": (
        "return np.zeros((2**31, 2**31, 4), dtype='uint8').shape",
        MIS_SIZED,
    ),
    "empty-wrapping-shape": (
        "return walle_engine.Tensor.empty('float32', [2**62, 4]).shape",
        MIS_SIZED,
    ),
    "raster-huge-destination": (
        "t = walle_engine.Tensor.empty('float32', [4])\n"
        "return ops.raster([t], [(0, 0, 0, [1, 1, 4], [0, 0, 1], [0, 0, 1])], [2**62]).shape",
        MIS_SIZED,
    ),
    # a float32 operand read as int64 (binary ops refuse mixed dtypes; select does not)
    "select-mixed-dtypes": (
        "c = np.array([True, False]).tensor\n"
        "return repr(ops.select(c, np.array([1, 2], dtype='int64').tensor, np.zeros(2).tensor))",
        "select reads an operand as another dtype (issue 12, engine class 2)",
    ),
}
# Hostile entries the engine already refuses cleanly: kept as regression guards.
REFUSED = {
    "raster-out-of-bounds": "t = walle_engine.Tensor.empty('float32', [4])\n"
    "return ops.raster([t], [(0, 0, 0, [1, 1, 1 << 40], [0, 0, 1], [0, 0, 1])], [4])",
    "raster-negative-stride": "t = walle_engine.Tensor.empty('float32', [4])\n"
    "return ops.raster([t], [(0, 0, 0, [1, 1, 4], [0, 0, -10**6], [0, 0, 1])], [4])",
    "index-far-out": "return float(np.zeros(4)[np.array([10**12])].sum())",
    "put-far-out": "a = np.zeros(4)\na[np.array([10**12])] = 1\nreturn 1",
    "cv-resize-huge": "return cv.resize(np.zeros((4, 4, 3), dtype='uint8'), (2**31 - 1,) * 2).shape",
    "cv-crop-outside": "return cv.crop(np.zeros((4, 4, 3), dtype='uint8'), -9, -9, 99, 99).shape",
    "broadcast-huge": "return np.broadcast_to(np.zeros(1), (2**40,)).shape",
    "topk-huge-k": "return np.topk(np.zeros(4), 2**40)[0].shape",
}


def _device(cases: dict[str, str]) -> tuple[int, dict[str, list[object]], str]:
    sources = {n: HEAD + textwrap.indent(code, "    ") + "\n" for n, code in cases.items()}
    proc = subprocess.run(
        [sys.executable, "-c", DEVICE, json.dumps(sources)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    results = {r[0]: r[1:] for r in map(json.loads, proc.stdout.strip().splitlines())}
    return proc.returncode, results, proc.stderr[-1500:]


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_sizes_are_refused_without_harm(case: str) -> None:
    rc, results, err = _device({case: CASES[case][0]})
    assert rc == 0, f"the device process died ({rc}): {err}"
    ok, error_type, _ = results[case]
    assert ok is False and error_type in ("MemoryError", "ValueError", "OverflowError"), results


def test_hostile_entries_the_engine_refuses() -> None:
    rc, results, err = _device(REFUSED)  # one device process for all of them
    assert rc == 0, f"the device process died ({rc}) after {sorted(results)}: {err}"
    assert sorted(results) == sorted(REFUSED)
    for name, (ok, error_type, message) in results.items():
        assert ok is False, (name, error_type, message)
