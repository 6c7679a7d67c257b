"""A live Walle server for end-to-end tests and benchmarks: real daphne processes on free ports,
and the one way tests wait for what a live server does.

`embedded` is the one-laptop default (SQLite, in-process channel layer). `scaleout` is the
PostgreSQL + Redis configuration with two daphne processes, so a notice must cross processes.

- `live_server(tmp, backend, ...)` starts one (a context manager; benchmarks use it too).
- The `server` fixture gives a test one server per backend. It is a pytest plugin (the root
  conftest loads this module); a test or module configures it with a marker:

      pytestmark = pytest.mark.live(backends=["embedded"], worker=True, extra_env={...})

  `backends` defaults to both; the other arguments go to `live_server`. `module_server` is
  the same, started once per backend for all the tests of a module.
- `poll(condition, what=...)` (and `apoll` in async code) waits for a condition and, on a
  timeout, fails saying what it waited for and what it saw last. `start_daphne` is the one
  place a daphne process is started and awaited.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

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


APPLICATION = "walle_web.asgi:application"

#: How the tests and benchmarks run walle's daphne (docs/operations.md explains the options).
SERVER_OPTIONS = (
    # Devices ping every 60 s and wait 120 s for the pong; the server's own pings only find
    # dead peers, so every 5 minutes is enough (at daphne's 20 s default, pinging 10k sockets
    # was a tenth of the event loop), and a pong may take 120 s to come back from a busy
    # device before the socket is closed.
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
)


def daphne_command(
    port: int, application: str = APPLICATION, options: tuple[str, ...] = SERVER_OPTIONS
) -> list[str]:
    """walle_web.serve (daphne with housekeeping that does not walk every socket) on a port."""
    return [
        sys.executable,
        "-m",
        "walle_web.serve",
        # A deep accept backlog: thousands of devices reconnect at once after a failure.
        "-e",
        f"tcp:port={port}:interface=127.0.0.1:backlog=4096",
        *options,
        application,
    ]


def start_daphne(
    port: int,
    log: Path,
    *,
    env: dict | None = None,
    application: str = APPLICATION,
    options: tuple[str, ...] = SERVER_OPTIONS,
    health: str = "/healthz",
) -> subprocess.Popen:
    """Start daphne on 127.0.0.1:`port`, its output appended to `log`, and return once
    `health` answers 200; fails with the log's tail if the process exits first."""
    with log.open("a") as fh:
        proc = subprocess.Popen(
            daphne_command(port, application, options),
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(url + health, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        poll(healthy, timeout=60, what=f"daphne on {url} to answer {health}")
    except AssertionError:
        stop_processes([proc])
        raise AssertionError(
            f"daphne on {url} never became healthy:\n{log.read_text()[-3000:]}"
        ) from None
    return proc


def stop_processes(procs: list[subprocess.Popen], timeout: float = 10) -> None:
    """SIGTERM every process, then SIGKILL the ones still running after `timeout`."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- waiting -----------------------------------------------------------------------------


def _seen(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 600 else text[:600] + "…"


def poll[T](
    condition: Callable[[], T],
    *,
    what: str,
    timeout: float = 60.0,
    interval: float = 0.2,
    until: Callable[[T], bool] | None = None,
) -> T:
    """Call `condition` until its value is truthy (or passes `until`) and return that value.

    A live server answers in its own time: this is how a test waits for it. On a timeout it
    raises AssertionError naming `what` it waited for and the last value it saw.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if until(value) if until is not None else value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last seen: {_seen(value)}"
            )
        time.sleep(interval)


async def apoll[T](
    condition: Callable[[], T | Awaitable[T]],
    *,
    what: str,
    timeout: float = 60.0,
    interval: float = 0.2,
    until: Callable[[T], bool] | None = None,
) -> T:
    """`poll` on an event loop: `condition` may be a coroutine function; a blocking one (an
    HTTP call to the server) belongs in `lambda: asyncio.to_thread(...)`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if until(value) if until is not None else value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last seen: {_seen(value)}"
            )
        await asyncio.sleep(interval)


def wait_for_release(
    api: httpx.Client, release_id: int, until: Callable[[dict], bool], what: str, timeout=120
) -> dict:
    """The release's API body once `until(body)` holds."""
    return poll(
        lambda: api.get(f"/api/v1/releases/{release_id}/").json(),
        until=until,
        what=f"release {release_id} {what}",
        timeout=timeout,
        interval=0.3,
    )


def wait_for_counts(api: httpx.Client, release_id: int, want: dict, timeout: float = 90) -> dict:
    """The release's deployment counts once every count in `want` has its value."""
    return wait_for_release(
        api,
        release_id,
        lambda body: all(body["counts"].get(k) == v for k, v in want.items()),
        f"to reach counts {want}",
        timeout,
    )["counts"]


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
        self.procs[index] = start_daphne(port, self.logs[index], env=self.env)

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


@contextmanager
def live_server(
    tmp: Path,
    backend: str = "embedded",
    processes: int | None = None,
    extra_env: dict | None = None,
    worker: bool = False,
) -> Iterator[LiveServer]:
    """Migrate and bootstrap a fresh database, start `processes` daphne processes (two for
    scaleout) and, with `worker`, the rollout worker; stop them all and drop the database
    on the way out."""
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
            procs.append(start_daphne(port, log, env=env))
            urls.append(f"http://127.0.0.1:{port}")
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
        stop_processes(procs)
        if dbname:
            import psycopg

            with psycopg.connect(PG_URL + "postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


# --- the pytest plugin: one `server` fixture, configured by @pytest.mark.live ----------------

BACKENDS = ("embedded", "scaleout")
LIVE_OPTIONS = {"processes", "extra_env", "worker"}
#: The fixtures that start a live server, and how long each one lives.
SERVER_FIXTURES = {"server": "function", "module_server": "module"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "live(backends=('embedded', 'scaleout'), processes=None, extra_env=None, worker=False):"
        " how the `server` (or `module_server`) fixture starts its live server (tests/live.py)",
    )


def _live_marker(node: Any) -> dict[str, Any]:
    marker = node.get_closest_marker("live")
    options = dict(marker.kwargs) if marker else {}
    unknown = set(options) - LIVE_OPTIONS - {"backends"}
    if unknown:
        raise TypeError(f"pytest.mark.live got unknown options {sorted(unknown)}")
    return options


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    backends = _live_marker(metafunc.definition).get("backends", BACKENDS)
    for name, scope in SERVER_FIXTURES.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(
                name,
                [
                    pytest.param(b, marks=[pytest.mark.scaleout] if b == "scaleout" else [])
                    for b in backends
                ],
                ids=list(backends),
                indirect=True,
                scope=scope,
            )


def _serve(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    backend = request.param
    if backend == "scaleout" and (why := scaleout_unavailable()):
        print(f"skipping the PostgreSQL + Redis run: {why}")
        pytest.skip(why)
    options = {k: v for k, v in _live_marker(request.node).items() if k in LIVE_OPTIONS}
    with live_server(tmp_path_factory.mktemp(f"live-{backend}"), backend, **options) as srv:
        yield srv


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A live server on the backend of this parameter (skipped, with the reason printed, when
    PostgreSQL or Redis does not answer for `scaleout`)."""
    yield from _serve(request, tmp_path_factory)


@pytest.fixture(scope="module")
def module_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """`server`, started once per backend for every test of a module."""
    yield from _serve(request, tmp_path_factory)
