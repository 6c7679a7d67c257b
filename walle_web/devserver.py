"""`make run`: migrate, load demo data, start daphne (which runs the rollout loop) and a
simulated fleet, and print where to look. Run it again and it is the same: the same devices
(their identities are kept under var/fleet/), the same login, printed again and written to
var/credentials.txt.

The terminal keeps the login in view: the fleet's status is one line, rewritten in place.
Ctrl-C stops the fleet first (its devices say goodbye), then the server, and
marks every device offline (nothing is left to hear them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("WALLE_VAR_DIR", ROOT / "var"))
CREDENTIALS = VAR / "credentials.txt"


def manage(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with code {proc.returncode}; see the messages above")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    sys.exit(f"the server did not answer on {url} within {timeout:.0f}s")


class Terminal:
    """Messages scroll; the fleet's status stays one line at the bottom, rewritten in place.

    Without a terminal (a log file, CI) status lines are written as lines, at most one every
    `quiet_s` seconds, so the log stays readable.
    """

    def __init__(self, stream=sys.stdout, quiet_s: float = 15.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self.status_line = ""
        self.quiet_s = quiet_s
        self.last_status_at = 0.0

    def _width(self) -> int:
        return max(20, shutil.get_terminal_size((120, 20)).columns - 1)

    def line(self, text: str) -> None:
        with self.lock:
            if self.tty:
                self.stream.write("\r\033[K" + text + "\n")
                if self.status_line:
                    self.stream.write(self.status_line[: self._width()])
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def status(self, text: str) -> None:
        with self.lock:
            self.status_line = text
            if self.tty:
                self.stream.write("\r\033[K" + text[: self._width()])
            elif time.monotonic() - self.last_status_at >= self.quiet_s:
                self.last_status_at = time.monotonic()
                self.stream.write(text + "\n")
            self.stream.flush()

    def end_status(self) -> None:
        with self.lock:
            if self.tty and self.status_line:
                self.stream.write("\n")
                self.stream.flush()
            self.status_line = ""


def pump(proc: subprocess.Popen, term: Terminal, prefix: str) -> threading.Thread:
    """Copy a child's output to the terminal: its status lines in place, the rest as lines."""

    def run() -> None:
        for raw in proc.stdout:
            text = raw.rstrip("\n")
            if not text:
                continue
            if "] fleet: " in text and "connected" in text:
                term.status(text)
            else:
                term.line(prefix + text)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def write_credentials(url: str, demo: dict, password: str | None) -> None:
    """The login, token and enrollment key, owner-only, for when the terminal scrolled away."""
    VAR.mkdir(parents=True, exist_ok=True)
    text = (
        f"# Walle `make run` credentials, written {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        f"console:  {url}/\n"
        f"user:     {demo['user']}\n"
        f"password: {password or '(changed since the first run: reset it with `.venv/bin/python manage.py changepassword ' + demo['user'] + '`)'}\n"
        f"api token: {demo['token']}\n"
        f"api docs: {url}/api/docs/\n"
        f"device enroll key: {demo['enroll_key']}\n"
    )
    tmp = CREDENTIALS.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, CREDENTIALS)


def stop_all(procs: list[subprocess.Popen], term: Terminal) -> None:
    """The fleet first, so its devices disconnect while the server still hears them; then the
    server (and a separate rollout worker, with Redis); then whatever is still marked online
    is marked offline."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    term.end_status()
    marked = manage("offline").strip()
    term.line(f"stopped; {marked}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--devices", type=int, default=50)
    args = parser.parse_args()
    url = f"http://{args.host}:{args.port}"
    term = Terminal()
    # A development command: DEBUG on (so the development secret key is accepted) for every
    # process it starts.
    os.environ.setdefault("WALLE_DEBUG", "1")

    term.line("migrating the database…")
    manage("migrate", "--noinput")
    manage("offline")  # a run that was killed left its devices "online"
    demo = json.loads(manage("demo"))
    password = demo["password"]
    write_credentials(url, demo, password)
    procs: list[subprocess.Popen] = []
    stopping = threading.Event()

    def on_signal(*_):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    # The children get their own sessions: Ctrl-C reaches only this process, which stops them
    # in order (a fleet and a server stopped at once leave devices marked online).
    child = {"cwd": ROOT, "start_new_session": True}
    piped = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "bufsize": 1}
    try:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "walle_web.serve",  # daphne, with lean housekeeping (walle_web/serve.py)
                "-b",
                args.host,
                "-p",
                str(args.port),
                # Requests go to a file; the terminal shows the fleet's progress instead.
                "--access-log",
                str(VAR / "access.log"),
                "walle_web.asgi:application",
            ],
            **child,
            **piped,  # its messages (the rollout loop's steps) scroll above the fleet's status
        )
        procs.append(server)
        pump(server, term, "server: ")
        wait_healthy(url, server)
        # The embedded configuration runs the rollout loop inside the server process; with
        # Redis (REDIS_URL set) it is a process of its own.
        if os.environ.get("REDIS_URL"):
            worker = subprocess.Popen(
                [sys.executable, "-u", "manage.py", "rolloutd"], **child, **piped
            )
            procs.append(worker)
            pump(worker, term, "worker: ")
        term.line(
            "\n"
            f"  Walle is running at {url}\n"
            f"  console       : {url}/           login: {demo['user']} / {password or '(changed; see ' + str(CREDENTIALS) + ')'}\n"
            f"  Django admin  : {url}/admin/\n"
            f"  REST API docs : {url}/api/docs/   token: {demo['token']}\n"
            f"  device enroll key: {demo['enroll_key']}\n"
            f"  these are also in {CREDENTIALS}\n"
            f"  a fleet of {args.devices} simulated devices is starting; Ctrl-C stops everything.\n"
        )
        fleet = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "walle_device",
                "fleet",
                "--server",
                url,
                "--enroll-key",
                demo["enroll_key"],
                "--devices",
                str(args.devices),
                # Simulated app usage feeds the item-views trigger; results flow back.
                "--events-per-second",
                "2",
                # Per-device stream logs and outboxes, and the fleet's identities: the next
                # `make run` brings back the same devices.
                "--state-dir",
                str(VAR / "fleet"),
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            **child,
            **piped,
        )
        procs.append(fleet)
        pump(fleet, term, "")
        released_at = None if demo["latest_released"] else time.monotonic() + 10
        while not stopping.is_set() and all(proc.poll() is None for proc in procs):
            if released_at is not None and time.monotonic() >= released_at:
                # Show the loop: once the fleet runs v1, release v2 and watch it roll out.
                released_at = None
                api = httpx.Client(
                    base_url=url, headers={"Authorization": f"Token {demo['token']}"}, timeout=30
                )
                created = api.post(
                    "/api/v1/releases/",
                    json={"version": demo["latest_version"], "name": "page-stats v2"},
                ).json()
                api.post(f"/api/v1/releases/{created['id']}/start/")
                term.line(
                    f"  released page-stats v2 (release {created['id']}): "
                    f"{url}/apps/{demo['app']}/releases/{created['id']}/"
                )
            stopping.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        stop_all(procs, term)


if __name__ == "__main__":
    main()
