"""Enrollment rate: N simulated devices enroll against one server process (embedded: one
daphne, SQLite), through the simulator's shared HTTP clients (`walle_device.fleet`).

    .venv/bin/python bench/enroll.py --devices 2000           # JSON in bench/out/enroll-<N>.json

Prints devices per second as the simulator timed it, with the CPU seconds of the server
process and of this (the simulator's) process over the same interval, and the load average
(other jobs share the machine: read the CPU seconds before the rate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.delivery import cpu_seconds, raise_nofile  # noqa: E402

OUT_DIR = ROOT / "bench" / "out"


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def enroll_all(url: str, key: str, n: int, concurrency: int) -> float:
    from walle_device.fleet import build_fleet

    t = time.monotonic()
    fleet = await build_fleet(url, key, n, seed=11, concurrency=concurrency)
    seconds = time.monotonic() - t
    assert len({d.identity.device_id for d in fleet.devices}) == n
    await fleet.http.aclose()
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64, help="enrollments in flight")
    p.add_argument("--out")
    args = p.parse_args()
    raise_nofile()
    from tests.live import live_server

    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="walle-enroll-") as tmp:
        env = {"WALLE_DEBUG": "0", "WALLE_SECRET_KEY": os.urandom(32).hex()}
        with live_server(Path(tmp), "embedded", extra_env=env) as srv:
            server = srv.procs[0].pid
            server0, sim0 = cpu_seconds(server), own_cpu()
            seconds = asyncio.run(
                enroll_all(srv.url, srv.enroll_key, args.devices, args.concurrency)
            )
            server_cpu, sim_cpu = cpu_seconds(server) - server0, own_cpu() - sim0
            enrolled = srv.query("SELECT count(*) FROM devices_device")[0][0]
    result = {
        "devices": args.devices,
        "enrolled_in_db": enrolled,
        "seconds": round(seconds, 2),
        "per_s": round(args.devices / seconds, 1),
        "server_cpu_s": round(server_cpu, 1),
        "simulator_cpu_s": round(sim_cpu, 1),
        "concurrency": args.concurrency,
        "load_avg_before": [round(x, 2) for x in load],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(
        f"{args.devices} enrolled in {seconds:.1f} s: {result['per_s']:.0f}/s; "
        f"server CPU {server_cpu:.1f} s, simulator CPU {sim_cpu:.1f} s; "
        f"load {load[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else OUT_DIR / f"enroll-{args.devices}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
