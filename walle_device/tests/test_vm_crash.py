"""Crash containment and lifecycle: a native crash names the task and is charged to it,
the runtime restarts and quarantines a task version that keeps crashing it, and close()
and process exit stay bounded when a task is stuck in C."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from walle_device.vm import TaskVM, crash

ROOT = Path(__file__).resolve().parents[2]

CRASHING_DEVICE = textwrap.dedent(
    """
    import faulthandler, os, signal, sys, threading
    from walle_device.vm import TaskVM, crash

    if __name__ == "__main__":
        faulthandler.enable(all_threads=True)
        crash_dir = sys.argv[1]
        vm = TaskVM(1, process_workers=0, crash_dir=crash_dir, quarantine_after=2)
        vm.load("calm", "def run(ctx):\\n    return 1\\n")
        vm.load("crashy", "import time\\ndef run(ctx):\\n    time.sleep(60)\\n",
                config={"timeout_s": 120})
        assert vm.run("calm").ok
        running = threading.Event()
        fut = vm.submit("crashy")
        # Wait for the black box to show the run (a condition, polled on a short timer).
        while not fut.done() and not any("crashy" in k for k in crash.BlackBox.read(
                crash_dir + "/" + crash.BLACKBOX_NAME)):
            running.wait(0.01)
        if fut.done():
            r = fut.result()
            print("RESULT", r.error_type, r.message, flush=True)
            vm.close()
            sys.exit(0)
        # A native crash inside the task's thread (as a bad engine call would cause), once
        # the task's own frame is on its stack: the thread sleeps in time.sleep's syscall.
        worker = next(t for t in threading.enumerate() if t.name == "walle-vm-0")
        nanosleep = {"x86_64": "230", "aarch64": "115"}[os.uname().machine]
        with open(f"/proc/self/task/{worker.native_id}/syscall") as now:
            while now.read().split(" ", 1)[0] != nanosleep:
                running.wait(0.01)
                now.seek(0)
        signal.pthread_kill(worker.ident, signal.SIGSEGV)
        running.wait(30)
    """
)


def test_black_box_and_ledger_name_and_count_crashes(tmp_path: Path) -> None:
    box = crash.BlackBox(tmp_path / crash.BLACKBOX_NAME)
    a, b = box.take_slot(), box.take_slot()
    box.enter(a, "ctr@abc")
    box.enter(b, "ranker@def")
    box.leave(b)
    assert crash.BlackBox.read(tmp_path / crash.BLACKBOX_NAME) == ["ctr@abc"]
    first = crash.record_crash(tmp_path, "SIGSEGV", quarantine_after=2)
    assert [(c["task"], c["crashes"], "quarantined" in c) for c in first] == [("ctr", 1, False)]
    second = crash.record_crash(tmp_path, "SIGSEGV", quarantine_after=2)
    assert second[0]["crashes"] == 2 and "SIGSEGV" in second[0]["quarantined"]
    ledger = crash.CrashLedger(tmp_path / crash.LEDGER_NAME)
    assert ledger.quarantined("ctr@abc") and not ledger.quarantined("ctr@other-version")


def test_the_supervisor_restarts_after_a_native_crash_and_quarantines_the_task(
    tmp_path: Path,
) -> None:
    script = tmp_path / "device.py"
    script.write_text(CRASHING_DEVICE)
    crash_dir = tmp_path / "crash"
    log = tmp_path / "child.log"
    with log.open("w") as child_err:
        # The child inherits the supervisor's stderr: faulthandler writes there too.
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from walle_device.vm import crash; "
                f"sys.exit(crash.supervise([sys.executable, {str(script)!r}, {str(crash_dir)!r}], "
                f"{str(crash_dir)!r}, quarantine_after=2, max_restarts=4))",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=child_err,
            text=True,
            timeout=120,
        )
    err = log.read_text()
    assert proc.returncode == 0, (proc.stdout, err)
    # Two crashes, each charged to the running task, then the version is quarantined and
    # the third start refuses to run it, with the reason.
    assert err.count("crashed (SIGSEGV) while running crashy") == 2, err
    assert "task crashy is quarantined" in err
    assert "RESULT TaskQuarantined quarantined after 2 crashes" in proc.stdout
    # faulthandler named the task's own frame in the crashing thread.
    assert '<task crashy>", line 3 in run' in err


def test_a_crashing_worker_process_counts_towards_quarantine(tmp_path: Path) -> None:
    code = "import time\ndef run(ctx):\n    time.sleep(60)\n"
    with TaskVM(1, process_workers=1, crash_dir=tmp_path, quarantine_after=2) as vm:
        vm.load("dies", code, config={"isolation": "process", "max_failures": 100})
        for _ in range(2):
            fut = vm.submit("dies")
            assert vm._proc.workers[0].busy.wait(60)
            # SIGKILL stands in for a native crash of the worker process running it.
            vm._proc.workers[0].proc.kill()
            assert fut.result(timeout=60).error_type == "WorkerCrashed"
        r = vm.run("dies")
        assert r.error_type == "TaskQuarantined" and "2 crashes" in r.message, r
        assert not vm.status("dies").enabled


def test_close_racing_the_replacement_of_a_stuck_worker_is_clean() -> None:
    stuck = "def run(ctx):\n    return sum(range(4 * 10 ** 7))\n"  # about a second in C
    for _ in range(3):
        vm = TaskVM(1, process_workers=0, grace_s=0.0, spares=0)
        vm.load("stuck", stuck, config={"timeout_s": 0.05})
        r = vm.run("stuck")  # resolved by the supervisor, which now spawns a replacement
        assert r.timed_out
        assert vm.close(timeout=30) is True  # no "cannot join thread before it is started"


def test_process_exit_is_bounded_when_a_task_is_stuck_in_c(tmp_path: Path) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(
        textwrap.dedent(
            """
            from walle_device.vm import TaskVM
            if __name__ == "__main__":
                vm = TaskVM(1, process_workers=0, grace_s=0.0, spares=0)
                vm.load("stuck", "def run(ctx):\\n    return sum(range(10 ** 11))\\n",
                        config={"timeout_s": 0.05})
                print("run", vm.run("stuck").error_type, flush=True)
                print("closed", vm.close(timeout=0.5), flush=True)
                # Interpreter finalization would wait for the stuck thread for minutes.
            """
        )
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "run TaskTimeout" in proc.stdout and "closed False" in proc.stdout, proc
    assert proc.returncode == 75, proc.stderr  # os._exit(EXIT_STUCK), not a hang
    assert time.monotonic() - t0 < 60


def test_a_huge_value_built_by_the_last_expression_is_charged_to_the_budget() -> None:
    with TaskVM(1, process_workers=0) as vm:
        vm.load(
            "last",
            "def run(ctx):\n    return b'x' * (256 << 20)\n",
            config={"max_memory_mb": 64},
        )
        r = vm.run("last")
        assert not r.ok and r.error_type == "MemoryBudgetExceeded", r


@pytest.mark.parametrize("n", [1, 2])
def test_close_is_idempotent_and_bounded(n: int) -> None:
    vm = TaskVM(n, process_workers=1)
    vm.wait_ready()
    closers = [threading.Thread(target=vm.close) for _ in range(3)]
    for c in closers:
        c.start()
    for c in closers:
        c.join(30)
    assert not any(c.is_alive() for c in closers)
    assert vm.close() is True


def test_the_device_child_does_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    child = (
        "import os, sys, threading; from walle_device.vm import crash; crash.die_with_parent(); "
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); threading.Event().wait(120)"
    )
    sup = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from walle_device.vm import crash; "
            f"crash.supervise([sys.executable, '-c', {child!r}], {str(tmp_path)!r})",
        ],
        cwd=ROOT,
    )
    gone = threading.Event()
    while not pid_file.exists() or not pid_file.read_text():
        assert sup.poll() is None
        gone.wait(0.02)
    pid = int(pid_file.read_text())
    sup.kill()  # kill -9: no chance to pass anything on
    sup.wait(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        gone.wait(0.05)
    else:
        os.kill(pid, 9)
        pytest.fail("the device child outlived its supervisor")
