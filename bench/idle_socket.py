"""Server memory per idle device socket, by allocation site: one daphne (embedded), N devices
connected and idle, Python's heap traced between "before they connect" and "all connected".

    .venv/bin/python bench/idle_socket.py --devices 500 [--top 30]

Prints the allocations still alive per socket (bytes of Python objects; RSS growth, which
bench/delivery.py reports, adds the allocator's own overhead and the kernel's socket buffers
are not in either) and writes bench/out/idle-socket-<N>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.delivery import raise_nofile, rss_bytes  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    raise_nofile()
    from tests.live import live_server

    work = Path(tempfile.mkdtemp(prefix="walle-bench-idle-"))
    trace = work / "trace.txt"
    with live_server(work, "embedded", extra_env={"WALLE_PROFILE_MEMORY": str(trace)}) as srv:
        pid = srv.procs[0].pid

        async def run() -> dict:
            from walle_device.fleet import build_fleet

            # Enroll first (not measured), then connect.
            fleet = await build_fleet(srv.url, srv.enroll_key, args.devices, seed=5)
            await asyncio.sleep(2)
            os.kill(pid, signal.SIGUSR1)
            await asyncio.sleep(2)
            rss0 = rss_bytes(pid)
            stop = asyncio.Event()
            runners = [asyncio.ensure_future(d.run(stop)) for d in fleet.devices]
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if sum(d.connected.is_set() for d in fleet.devices) == args.devices:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)  # hellos answered, the server idle again
            rss1 = rss_bytes(pid)
            os.kill(pid, signal.SIGUSR2)
            for _ in range(100):
                await asyncio.sleep(0.2)
                if trace.exists():
                    break
            await asyncio.sleep(1)
            stop.set()
            await asyncio.gather(*runners, return_exceptions=True)
            await fleet.http.aclose()
            return {"rss_per_socket_kib": (rss1 - rss0) / args.devices / 1024}

        got = asyncio.run(run())
    rows = []
    for line in trace.read_text().splitlines():
        size, count, site = line.split(" ", 2)
        rows.append((int(size), int(count), site))
    total = sum(r[0] for r in rows)
    n = args.devices
    print(f"{n} idle sockets: Python heap +{total / n / 1024:.1f} KiB per socket, "
          f"RSS +{got['rss_per_socket_kib']:.1f} KiB per socket (tracing on)")  # fmt: skip
    for size, count, site in sorted(rows, reverse=True)[: args.top]:
        print(f"{size / n:8.0f} B {count / n:6.1f} objs  {site.split('/site-packages/')[-1]}")
    out = ROOT / "bench" / "out" / f"idle-socket-{n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "devices": n,
                "heap_per_socket_kib": round(total / n / 1024, 2),
                "rss_per_socket_kib_traced": round(got["rss_per_socket_kib"], 2),
                "loadavg": os.getloadavg(),
                "top": [[s, c, site] for s, c, site in sorted(rows, reverse=True)[:60]],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
