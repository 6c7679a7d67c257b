"""The release start call with N connected devices: its wall time through the API of the
server that holds the devices' sockets, and the service alone (`start_release` in a separate
process on the same database, no sockets, no HTTP).

    .venv/bin/python bench/start_call.py --devices 10000    # JSON in bench/out/start-call-<N>.json

One daphne, SQLite (embedded). The devices are the real simulator's clients (`walle_device.
fleet`, one process: this one), connected in waves of 200 and idle (each said hello) when a
release of a 4 KiB task starts for all of them. Printed: the start call's wall time; when the
first and the last (p99, max) device heard the notice, from the start call; and the service
time of starting a second release to the same N online devices outside the server (what the
database and the bookkeeping cost, without the event loop that serves 10k sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.delivery import raise_nofile  # noqa: E402

OUT_DIR = ROOT / "bench" / "out"
TASK_MAIN = b"def run(ctx):\n    return len(ctx.read('data.bin'))\n"

SERVICE = """
import json, time
from releases.models import Release
from releases.services import create_release, start_release
from tasks.models import TaskVersion
version = TaskVersion.objects.get(pk={version})
release = create_release(version)
t = time.perf_counter()
start_release(release)
print(json.dumps({{"service_s": time.perf_counter() - t,
                  "deployments": release.deployments.count()}}))
"""


def upload(api, app: int, name: str) -> dict:
    task = api.post("/api/v1/tasks/", json={"app": app, "name": name}).json()
    response = api.post(
        f"/api/v1/tasks/{task['id']}/versions/",
        files=[("files", ("main.py", TASK_MAIN)), ("files", ("data.bin", b"d" * 4096))],
        data={"entry_point": "main.py"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def scenario(srv, n: int, wave: int) -> dict:
    from walle_device.fleet import build_fleet
    from walle_device.vm import TaskVM

    api = srv.api()
    first = upload(api, srv.app, "start-wall")
    second = upload(api, srv.app, "start-service")
    vm = TaskVM(process_workers=0)
    t = time.monotonic()
    fleet = await build_fleet(srv.url, srv.enroll_key, n, seed=5, vm=vm)
    enroll_s = time.monotonic() - t
    heard = [0.0] * n
    for i, device in enumerate(fleet.devices):
        device.listeners.append(
            lambda event, _data, i=i: (
                heard.__setitem__(i, heard[i] or time.time()) if event == "notify" else None
            )
        )
    stop = asyncio.Event()
    runners = []
    t = time.monotonic()
    for start in range(0, n, wave):
        batch = range(start, min(n, start + wave))
        runners += [asyncio.ensure_future(fleet.devices[i].run(stop)) for i in batch]
        # synced: the server answered the hello, so the socket is registered for notices.
        await asyncio.wait_for(
            asyncio.gather(*(fleet.devices[i].synced.wait() for i in batch)), 300
        )
    connect_s = time.monotonic() - t
    await asyncio.sleep(2)  # let the last presence writes settle

    created = await asyncio.to_thread(api.post, "/api/v1/releases/", json={"version": first["id"]})
    release = created.json()["id"]
    t0 = time.time()
    started = await asyncio.to_thread(api.post, f"/api/v1/releases/{release}/start/")
    wall_s = time.time() - t0
    assert started.status_code == 200, started.text
    deadline = time.monotonic() + 120
    while sum(1 for h in heard if h) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    notices = [h - t0 for h in heard if h]

    # The service alone, in another process on the same database: a second task's release
    # to the same online devices (it publishes nowhere: no server loop in that process).
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", "shell", "-c", SERVICE.format(version=second["id"])],
        cwd=ROOT,
        env=srv.env,
        check=True,
        capture_output=True,
        text=True,
    )
    service = json.loads(out.stdout.strip().splitlines()[-1])
    stop.set()
    await asyncio.gather(*runners, return_exceptions=True)
    await fleet.http.aclose()
    vm.close()
    return {
        "devices": n,
        "enroll_s": round(enroll_s, 1),
        "connect_s": round(connect_s, 1),
        "start_call_wall_s": round(wall_s, 3),
        "start_service_s": round(service["service_s"], 3),
        "service_deployments": service["deployments"],
        "notified": len(notices),
        "notice_first_s": round(min(notices), 3) if notices else None,
        "notice_p50_s": round(quantile(notices, 0.5), 3),
        "notice_p99_s": round(quantile(notices, 0.99), 3),
        "notice_max_s": round(max(notices), 3) if notices else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=10000)
    p.add_argument("--wave", type=int, default=200, help="devices connecting at a time")
    p.add_argument("--out")
    args = p.parse_args()
    raise_nofile()
    from tests.live import live_server

    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="walle-start-") as tmp:
        env = {"WALLE_DEBUG": "0", "WALLE_SECRET_KEY": os.urandom(32).hex()}
        with live_server(Path(tmp), "embedded", extra_env=env) as srv:
            result = asyncio.run(scenario(srv, args.devices, args.wave))
    result["load_avg_before"] = [round(x, 2) for x in load]
    result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(result, indent=2))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else OUT_DIR / f"start-call-{args.devices}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
