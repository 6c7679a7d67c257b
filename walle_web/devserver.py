"""`make run`: migrate, load demo data, start daphne and a simulated fleet, print where to look.

Ctrl-C stops everything this started.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--devices", type=int, default=50)
    args = parser.parse_args()
    url = f"http://{args.host}:{args.port}"
    # A development command: DEBUG on (so the development secret key is accepted) for every
    # process it starts, and a fresh key for the worker's relay to the server.
    os.environ.setdefault("WALLE_DEBUG", "1")
    os.environ.setdefault("WALLE_RELAY_KEY", secrets.token_urlsafe(32))

    print("migrating the database…", flush=True)
    manage("migrate", "--noinput")
    demo = json.loads(manage("demo"))
    procs: list[subprocess.Popen] = []

    def stop(*_):
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                args.host,
                "-p",
                str(args.port),
                # Requests go to a file; the terminal shows the fleet's progress instead.
                "--access-log",
                str(ROOT / "var" / "access.log"),
                "walle_web.asgi:application",
            ],
            cwd=ROOT,
        )
        procs.append(server)
        wait_healthy(url, server)
        # The rollout worker; in the embedded configuration it relays its notices to the server.
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "rolloutd"],
            cwd=ROOT,
            env={**os.environ, "WALLE_RELAY_URL": url},
        )
        procs.append(worker)
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
                "--state-dir",
                str(ROOT / "var" / "fleet"),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(fleet)
        password = demo["password"] or "(unchanged since the first run)"
        print(
            "\n"
            f"  Walle is running at {url}\n"
            f"  console       : {url}/           login: {demo['user']} / {password}\n"
            f"  Django admin  : {url}/admin/\n"
            f"  REST API docs : {url}/api/docs/   token: {demo['token']}\n"
            f"  device enroll key: {demo['enroll_key']}\n"
            f"  a fleet of {args.devices} simulated devices is starting; Ctrl-C stops everything.\n",
            flush=True,
        )
        if not demo["latest_released"]:
            # Show the loop: once the fleet runs v1, release v2 and watch it roll out.
            time.sleep(10)
            api = httpx.Client(
                base_url=url, headers={"Authorization": f"Token {demo['token']}"}, timeout=30
            )
            created = api.post(
                "/api/v1/releases/",
                json={"version": demo["latest_version"], "name": "page-stats v2"},
            ).json()
            api.post(f"/api/v1/releases/{created['id']}/start/")
            print(
                f"  released page-stats v2 (release {created['id']}): {url}/api/v1/releases/{created['id']}/\n",
                flush=True,
            )
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop()


if __name__ == "__main__":
    main()
