"""Kill -9 a device process mid-upload, restart it on the same state dir: 0 lost, 0 duplicated.

The file is also the device: `python -m walle_device.tests.test_tunnel_kill STATE PORT N`
enqueues N results and uploads them to a line-JSON receiver, then prints DONE.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from walle_device.tunnel import Tunnel, result_key

DEVICE = "dev-kill"
ROOT = Path(__file__).resolve().parents[2]


class Receiver(socketserver.ThreadingTCPServer):
    """The cloud, reduced to its contract: store by key (dedup), then ack every key."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hold_after: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.stored: dict[str, Any] = {}
        self.received = 0
        self.hold_after = hold_after
        self.holding = threading.Event()  # set once a batch is stored but its ack withheld


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        srv: Receiver = self.server  # type: ignore[assignment]
        for line in self.rfile:
            req = json.loads(line)
            with srv.lock:
                for item in req["items"]:
                    srv.received += 1
                    srv.stored.setdefault(item["key"], item)
                hold = srv.hold_after and srv.received >= srv.hold_after
                if hold:
                    srv.hold_after = 0
            if hold:
                # Stored, not acked: the device dies waiting, the worst moment to die.
                srv.holding.set()
                time.sleep(30)
                return
            resp = {"id": req["id"], "keys": [i["key"] for i in req["items"]]}
            try:
                self.wfile.write((json.dumps(resp) + "\n").encode())
            except OSError:
                return


def _spawn(state: Path, port: int, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "walle_device.tests.test_tunnel_kill",
            str(state),
            str(port),
            str(n),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_device_killed_mid_upload_delivers_every_result_exactly_once(tmp_path: Path) -> None:
    n = 400
    srv = Receiver(hold_after=n // 3)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        first = _spawn(tmp_path, port, n)
        assert srv.holding.wait(60), first.stderr.read() if first.poll() is not None else ""
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert first.returncode == -signal.SIGKILL
        second = _spawn(tmp_path, port, n)
        out, err = second.communicate(timeout=90)
        assert second.returncode == 0, err
        assert "DONE" in out
    finally:
        srv.shutdown()
        srv.server_close()
    want = {result_key(DEVICE, "kill", 1, i): i for i in range(n)}
    assert set(srv.stored) == set(want)  # 0 lost, and the dict makes duplicates impossible
    assert all(srv.stored[k]["payload"]["i"] == i for k, i in want.items())
    assert srv.received >= n  # resends after the kill were absorbed by the key


async def _device(state: Path, port: int, n: int) -> None:
    tunnel = Tunnel(
        state, DEVICE, bulk_items=8, bulk_delay_s=0.05, backoff_base_s=0.01, backoff_cap_s=0.1
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    counter = 0

    async def send(items: list[dict[str, Any]]) -> list[str]:
        nonlocal counter
        counter += 1
        rid = counter
        writer.write((json.dumps({"id": rid, "items": items}) + "\n").encode())
        await writer.drain()
        while True:
            resp = json.loads(await reader.readline())
            if resp["id"] == rid:  # an answer to a timed-out request is stale
                return resp["keys"]

    stop = asyncio.Event()
    runner = asyncio.create_task(tunnel.run(send, stop))
    # A restarted device re-enqueues everything (as a replayed stream would re-fire): the
    # outbox keeps one row per key and remembers what was acked.
    for i in range(n):
        tunnel.enqueue(
            "kill", 1, i, {"i": i, "pad": "x" * 200}, lane="bulk" if i % 2 else "realtime"
        )
        if i % 10 == 0:
            await asyncio.sleep(0.002)
    tunnel.flush_soon()
    while tunnel.pending():
        await asyncio.sleep(0.01)
    stop.set()
    await runner
    print("DONE", tunnel.stats(), flush=True)


if __name__ == "__main__":
    asyncio.run(_device(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
