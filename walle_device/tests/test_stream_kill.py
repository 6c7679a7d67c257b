"""Kill -9 a device mid-stream and mid-upload; after a restart the cloud holds exactly the results
an uninterrupted run produces: the replayed log rebuilds partial matches, re-fired results
carry the same keys, and the outbox plus the cloud's dedup absorb the repeats.

The file is also the device: `python -m walle_device.tests.test_stream_kill STATE PORT`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from walle_device.stream import Stream, Window
from walle_device.stream.workload import generate_events, generate_triggers
from walle_device.tests.test_tunnel_kill import Receiver
from walle_device.tunnel import Tunnel, result_key

DEVICE = "dev-stream-kill"
ROOT = Path(__file__).resolve().parents[2]
N_EVENTS = 3000
TRIGGERS = {
    "ipv": {
        "steps": [{"kind": "page_enter"}, {"kind": "page_exit"}],
        "key": "visit",
        "window": {"type": "session"},
        "aggregates": [{"name": "items", "op": "distinct", "arg": "item"}],
    },
    **{f"gen{i}": spec for i, spec in enumerate(generate_triggers(11, 12))},
}


def events() -> list[dict[str, Any]]:
    return generate_events(5, N_EVENTS)


def payload(window: Window) -> dict[str, Any]:
    return {"n": len(window), "start": window.start_seq, "aggs": window.aggregates}


def expected(device: str = DEVICE) -> dict[str, dict[str, Any]]:
    """What an uninterrupted device uploads: key -> payload."""
    out: dict[str, dict[str, Any]] = {}

    def on_fire(task: str, seq: int, window: Window) -> None:
        out[result_key(device, task, 1, seq)] = payload(window)

    s = Stream(on_fire)
    for task, spec in TRIGGERS.items():
        s.register_trigger(task, spec)
    for e in events():
        s.emit(e["kind"], e["page"], e["event"], e["args"], e["ts"])
        if s.stats()["queued"] > 1000:
            s.process_pending()
    s.process_pending()
    return out


def _spawn(state: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "walle_device.tests.test_stream_kill", str(state), str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_device_killed_mid_stream_uploads_exactly_what_an_uninterrupted_one_would(
    tmp_path: Path,
) -> None:
    want = expected()
    assert len(want) > 150  # enough fires that the kill lands in the middle of them
    srv = Receiver(hold_after=len(want) // 4)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        first = _spawn(tmp_path, port)
        assert srv.holding.wait(60), first.stderr.read() if first.poll() is not None else ""
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = _spawn(tmp_path, port)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        assert "DONE" in out
        resumed = json.loads(out.split("DONE", 1)[1])["resumed"]
        assert 0 < resumed < N_EVENTS  # the first run died mid-stream
    finally:
        srv.shutdown()
        srv.server_close()
    assert set(srv.stored) == set(want)  # 0 lost, 0 extra
    assert {k: v["payload"] for k, v in srv.stored.items()} == want  # same windows, too


async def run_device(
    state: Path, device_id: str, send: Any, *, every: int = 10, pause_s: float = 0.005
) -> None:
    """The device: stream + tunnel on `state`, resuming where the durable log ends, uploading
    through `send`; prints DONE with stats once every result is acked."""
    tunnel = Tunnel(state, device_id, backoff_base_s=0.01, backoff_cap_s=0.2)

    def on_fire(task: str, seq: int, window: Window) -> None:
        tunnel.enqueue(task, 1, seq, payload(window))

    stream = Stream(on_fire, state_dir=state, batch_max=64)
    for task, spec in TRIGGERS.items():
        stream.register_trigger(task, spec)
    stream.start()  # replays the log tail first
    stop = asyncio.Event()
    runner = asyncio.create_task(tunnel.run(send, stop))
    # The app resumes where the durable log ends (events still in the emit queue at the
    # kill were lost with the process, as an app's in-memory events would be).
    evs = events()
    resumed = stream.stats()["next_seq"]
    for i in range(resumed, len(evs)):
        e = evs[i]
        while not stream.emit(e["kind"], e["page"], e["event"], e["args"], e["ts"]):
            await asyncio.sleep(0.001)
        if i % every == 0:
            await asyncio.sleep(pause_s)  # app pace, so the kill lands mid-stream
    await asyncio.to_thread(stream.flush, 60)
    stream.stop()
    while tunnel.pending():
        await asyncio.sleep(0.01)
    stop.set()
    await runner
    print("DONE", json.dumps({"resumed": resumed, **tunnel.stats()}), flush=True)


async def _device(state: Path, port: int) -> None:
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
            if resp["id"] == rid:
                return resp["keys"]

    await run_device(state, DEVICE, send)


if __name__ == "__main__":
    asyncio.run(_device(Path(sys.argv[1]), int(sys.argv[2])))
