"""A live Walle server for end-to-end tests and benchmarks: real daphne processes on free ports.

`embedded` is the one-laptop default (SQLite, in-process channel layer). `scaleout` is the
PostgreSQL + Redis configuration with two daphne processes, so a notice must cross processes.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("WALLE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/")
REDIS_URL = os.environ.get("WALLE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scaleout_unavailable() -> str | None:
    """Why the PostgreSQL + Redis configuration cannot be tested here, or None if it can."""
    try:
        import psycopg

        with psycopg.connect(PG_URL + "postgres", connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} does not answer: {exc}"
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:
        return f"Redis at {REDIS_URL} does not answer: {exc}"
    return None


def daphne_command(port: int) -> list[str]:
    """How the tests and benchmarks run daphne (docs/operations.md explains the options):
    through walle_web.serve, daphne with housekeeping that does not walk every socket."""
    return [
        sys.executable,
        "-m",
        "walle_web.serve",
        # A deep accept backlog: thousands of devices reconnect at once after a failure.
        "-e",
        f"tcp:port={port}:interface=127.0.0.1:backlog=4096",
        # Devices ping every 60 s and wait 120 s for the pong; the server's own pings only
        # find dead peers, so every 5 minutes is enough (at daphne's 20 s default, pinging
        # 10k sockets was a tenth of the event loop), and a pong may take 120 s to come
        # back from a busy device before the socket is closed.
        "--ping-interval",
        "300",
        "--ping-timeout",
        "120",
        # daphne answers a handshake the application has not accepted by then with 403, the
        # status of a bad token; walle closes an overloaded handshake with 1013 after
        # WALLE_CONNECT_BUDGET_S, so daphne's own limit must be well above it, even when the
        # event loop is backed up.
        "--websocket_connect_timeout",
        "30",
        "walle_web.asgi:application",
    ]


@dataclass
class LiveServer:
    urls: list[str]
    env: dict
    var_dir: Path
    token: str
    enroll_key: str
    app: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    dbname: str | None = None
    logs: list[Path] = field(default_factory=list)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read the server's database directly (`%s` placeholders), as an operator would."""
        if self.dbname:
            import psycopg

            with psycopg.connect(PG_URL + self.dbname) as conn:
                return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        import sqlite3

        with sqlite3.connect(self.var_dir / "walle.sqlite3") as conn:
            return [tuple(r) for r in conn.execute(sql.replace("%s", "?"), params).fetchall()]

    def kill(self, index: int) -> None:
        """kill -9 one daphne process (fault tests)."""
        proc = self.procs[index]
        proc.kill()
        proc.wait(timeout=30)

    def restart(self, index: int) -> None:
        """Start daphne `index` again on its old port and wait until it is healthy."""
        port = int(self.urls[index].rsplit(":", 1)[1])
        log = self.logs[index]
        with log.open("a") as fh:
            proc = subprocess.Popen(
                daphne_command(port), cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT
            )
        self.procs[index] = proc
        _wait_healthy(self.urls[index], proc, log)

    @property
    def url(self) -> str:
        return self.urls[0]

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=60
        )

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"daphne did not become healthy in {timeout}s:\n{log.read_text()[-3000:]}")


@contextmanager
def live_server(
    tmp: Path,
    backend: str = "embedded",
    processes: int | None = None,
    extra_env: dict | None = None,
    worker: bool = False,
):
    var_dir = tmp / "var"
    var_dir.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_URL", "WALLE_", "DJANGO_SETTINGS"))
    }
    env.update(
        {
            "WALLE_VAR_DIR": str(var_dir),
            "WALLE_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            # The production posture (DEBUG off), so it needs its own secret key.
            "WALLE_SECRET_KEY": secrets.token_urlsafe(50),
            # A simulated fleet enrolls from one address; the defaults are for real devices.
            "WALLE_THROTTLE_ENROLL_ADDRESS": "1000000/min",
            "WALLE_THROTTLE_ENROLL_KEY": "1000000/min",
        }
    )
    dbname = None
    if backend == "scaleout":
        import psycopg

        dbname = f"walle_e2e_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_URL + "postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}" TEMPLATE template0')  # nobody connects to it
        env["DATABASE_URL"] = PG_URL + dbname
        env["REDIS_URL"] = REDIS_URL
        # Throttle counters live in Redis keyed by user id, and every test database has a
        # user 1: one prefix per database, as one deployment has one prefix.
        env["WALLE_CACHE_PREFIX"] = dbname
        processes = processes or 2
    # The rollout loop: in the embedded configuration the server runs it (when the test asks
    # for a worker); with Redis it is the separate `rolloutd` started below.
    env["WALLE_ROLLOUT_IN_SERVER"] = "1" if worker and backend == "embedded" else "0"
    env["WALLE_ROLLOUT_INTERVAL"] = "0.5"
    env.update(extra_env or {})
    processes = processes or 1
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        boot = json.loads(
            subprocess.run(
                [sys.executable, "manage.py", "bootstrap"],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        urls = []
        for i in range(processes):
            port = free_port()
            log = tmp / f"daphne-{i}.log"
            logs.append(log)
            with log.open("w") as fh:
                proc = subprocess.Popen(
                    daphne_command(port), cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT
                )
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc, log)
            urls.append(url)
        if worker and backend != "embedded":
            log = tmp / "rolloutd.log"
            procs.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "rolloutd", "--interval", "0.5"],
                    cwd=ROOT,
                    env=env,
                    stdout=log.open("w"),
                    stderr=subprocess.STDOUT,
                )
            )
        yield LiveServer(
            urls=urls,
            env=env,
            var_dir=var_dir,
            token=boot["token"],
            enroll_key=boot["enroll_key"],
            app=boot["app"],
            procs=procs,
            dbname=dbname,
            logs=logs,
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if dbname:
            import psycopg

            with psycopg.connect(PG_URL + "postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
