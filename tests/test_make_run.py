"""`make run` twice: the same simulated devices come back (no second enrollment), the login is
said again and written to a file it names, and stopping it marks every device offline."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.live import ROOT, free_port

pytestmark = pytest.mark.e2e
DEVICES = 3


class Run:
    """One `python -m walle_web.devserver`, its output collected line by line."""

    def __init__(self, var: Path, port: int) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_URL", "REDIS_URL", "WALLE_"))
        }
        env.update({"WALLE_VAR_DIR": str(var), "PYTHONUNBUFFERED": "1"})
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "walle_web.devserver",
                "--port",
                str(port),
                "--devices",
                str(DEVICES),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                left = deadline - time.monotonic()
                new_output = self.changed.wait(min(max(left, 0), 1.0))
                if left <= 0 or (not new_output and self.proc.poll() is not None):
                    tail = "\n".join(self.lines[-40:])
                    raise AssertionError(f"no line matches {pattern!r}:\n{tail}")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        self.proc.wait(timeout=60)
        return "\n".join(self.lines)


def devices(var: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(var / "walle.sqlite3") as db:
        return db.execute("SELECT uid, online FROM devices_device ORDER BY id").fetchall()


def test_make_run_twice_reuses_the_fleet_says_the_login_and_leaves_devices_offline(tmp_path):
    var = tmp_path / "var"
    first = Run(var, free_port())
    try:
        first.wait_for(r"login: admin / walle-admin")
        first.wait_for(
            rf"fleet: {DEVICES} devices of shop-android \(0 from an earlier start, {DEVICES} newly enrolled\)"
        )
        first.wait_for(rf"fleet: {DEVICES}/{DEVICES} connected")
    finally:
        out = first.stop()
    assert first.proc.returncode == 0, out
    assert "still marked online, now offline" in out  # after the fleet said goodbye
    enrolled = devices(var)
    assert len(enrolled) == DEVICES and not any(online for _, online in enrolled)
    credentials = (var / "credentials.txt").read_text()
    assert "password: walle-admin" in credentials and "device enroll key: wek_" in credentials
    assert (var / "credentials.txt").stat().st_mode & 0o077 == 0  # owner only
    assert str(var / "credentials.txt") in out

    second = Run(var, free_port())
    try:
        second.wait_for(r"login: admin / walle-admin")  # said again
        second.wait_for(
            rf"fleet: {DEVICES} devices of shop-android \({DEVICES} from an earlier start, 0 newly enrolled\)"
        )
        second.wait_for(rf"fleet: {DEVICES}/{DEVICES} connected")
        assert sorted(devices(var)) == sorted((uid, 1) for uid, _ in enrolled)  # the same ones
    finally:
        out = second.stop()
    assert [uid for uid, _ in devices(var)] == [uid for uid, _ in enrolled]
    assert not any(online for _, online in devices(var))
