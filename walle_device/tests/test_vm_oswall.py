"""The process backend's OS wall (seccomp, Landlock, rlimits), tested on its own: a child
process applies `oswall.apply` exactly as a worker does and then tries, with the real os
module (as code that got past both sandbox layers would), what the wall must stop."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest

from walle_device.vm import TaskVM, oswall
from walle_device.vm.pools import runtime_dirs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

PROBES = {
    "exec": "os.execv('/bin/true', ['true'])",
    "fork": "pid = os.fork()\nif pid == 0:\n    os._exit(0)",
    "socket": "import socket\nsocket.socket()",
    "socketpair": "import socket\nsocket.socketpair()",
    "write-tmp": "open(os.path.join(SCRATCH, 'x'), 'w')",
    "create-in-bundle": "open(os.path.join(BUNDLE, 'new'), 'w')",
    "truncate-bundle-file": "open(os.path.join(BUNDLE, 'data.txt'), 'r+')",
    "remove-bundle-file": "os.unlink(os.path.join(BUNDLE, 'data.txt'))",
    "mkdir": "os.mkdir(os.path.join(SCRATCH, 'd'))",
    "kill-parent": "os.kill(os.getppid(), 0)",
    "ptrace-like": "open('/proc/%d/mem' % os.getppid(), 'rb').read(1)",
    "chmod": "os.chmod(os.path.join(BUNDLE, 'data.txt'), 0o777)",
    "symlink": "os.symlink('/etc/passwd', os.path.join(SCRATCH, 'l'))",
}
if oswall.landlock_abi():
    PROBES["read-etc"] = "open('/etc/hostname', 'rb').read()"
    PROBES["read-scratch"] = "open(os.path.join(SCRATCH, 'secret'), 'rb').read()"


def _child(conn, bundle: str, scratch: str) -> None:
    report = oswall.apply((*runtime_dirs(), bundle), 1024)
    results = {}
    env = {"os": os, "BUNDLE": bundle, "SCRATCH": scratch}
    for name, code in PROBES.items():
        try:
            exec(code, dict(env))
            results[name] = "allowed"
        except OSError as e:
            results[name] = f"refused: {e.strerror}"
    # What a task needs still works: reading the bundle and the runtime, threads.
    import threading

    ok = []
    t = threading.Thread(target=lambda: ok.append(open(os.path.join(bundle, "data.txt")).read()))
    t.start()
    t.join()
    import json  # a runtime module, already imported; read a runtime file too

    with open(json.__file__, "rb") as f:
        ok.append(len(f.read()) > 0)
    conn.send((report, results, ok))


@pytest.fixture(scope="module")
def walled() -> tuple[dict, dict, list]:
    with tempfile.TemporaryDirectory() as bundle, tempfile.TemporaryDirectory() as scratch:
        Path(bundle, "data.txt").write_text("bundle data")
        Path(scratch, "secret").write_text("host secret")
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_child, args=(child, bundle, scratch))
        p.start()
        assert parent.poll(60), "the walled child did not answer"
        out = parent.recv()
        p.join(10)
        assert Path(bundle, "data.txt").read_text() == "bundle data"  # untouched
        return out


def test_the_wall_reports_what_it_applied(walled: tuple[dict, dict, list]) -> None:
    report, _, _ = walled
    assert report["seccomp"] is True
    assert report["landlock"] == oswall.landlock_abi()
    assert report["rlimits"]["nofile"] <= oswall.NOFILE and report["rlimits"]["as_mb"] <= 1024
    assert report["rlimits"]["core"] == 0


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_the_wall_refuses(walled: tuple[dict, dict, list], probe: str) -> None:
    _, results, _ = walled
    assert results[probe].startswith("refused"), results[probe]


def test_what_a_task_needs_still_works_behind_the_wall(walled: tuple[dict, dict, list]) -> None:
    _, _, ok = walled
    assert ok == ["bundle data", True]


def test_a_task_config_can_require_the_wall() -> None:
    with TaskVM(1, process_workers=1) as vm:
        vm.load(
            "walled",
            "def run(ctx):\n    return ctx.read('d.txt').decode()\n",
            files={"d.txt": b"hi"},
            config={"os_wall": True},
        )
        assert vm.status("walled").backend == "process"
        r = vm.run("walled")
        assert r.ok and r.output == "hi", r
        pool = vm._task("walled").pool
        assert pool is not None and pool.wall_report["seccomp"] is True
        # Its own worker, whose Landlock view is its bundle, not the VM's whole bundle store.
        bundle = os.path.dirname(vm._task("walled").load_spec["paths"]["d.txt"])
        assert os.path.join(bundle, "") in pool.wall_dirs
        assert os.path.join(str(vm._files_dir.resolve()), "") not in pool.wall_dirs
        assert vm.stats()["walled_task_workers"] == 1
    with TaskVM(1, process_workers=1, os_wall=False) as vm:
        with pytest.raises(ValueError, match="os_wall"):
            vm.load("walled", "def run(ctx):\n    return 1\n", config={"os_wall": True})


def _spin(seconds: float) -> None:
    oswall.apply(runtime_dirs(), 1024)
    oswall.arm_cpu(seconds)
    sum(range(10**12))  # stuck in C: only the kernel's CPU limit ends it


def test_the_cpu_limit_ends_a_worker_stuck_in_c() -> None:
    # The host kills an overrunning worker itself; the CPU rlimit is the backstop that
    # needs no host at all (SIGXCPU from the kernel).
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_spin, args=(0.5,))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGXCPU
