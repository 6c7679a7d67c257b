"""Stream matching throughput and per-event latency: the shared trie next to a per-trigger loop.

    .venv/bin/python bench/stream.py                 # 10, 100, 1000, 10000 triggers
    .venv/bin/python bench/stream.py --quick         # smaller, for a smoke run

Both matchers have the same semantics (the oracle tests pin it) and run in the same process
on the same seeded DESIGN §9 workload, rounds interleaved; fires per event are reported
because fire volume dominates the cost. Also measures the tunnel round trip (enqueue ->
upload -> ack -> row deleted) of a 30 KB result over loopback. Writes bench/out/stream.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from walle_device.stream.events import Event, sequence
from walle_device.stream.matcher import Matcher
from walle_device.stream.naive import NaiveMatcher
from walle_device.stream.runtime import Stream
from walle_device.stream.spec import compile_trigger
from walle_device.stream.workload import generate_events, generate_triggers
from walle_device.tunnel import Tunnel

OUT = Path(__file__).resolve().parent / "out" / "stream.json"


def build(kind: str, specs: list[dict[str, Any]]) -> Matcher | NaiveMatcher:
    m: Matcher | NaiveMatcher = Matcher() if kind == "trie" else NaiveMatcher()
    for i, s in enumerate(specs):
        m.add(f"t{i}", compile_trigger(s))
    return m


def throughput(m: Matcher | NaiveMatcher, evs: list[Event]) -> tuple[float, float, int]:
    """Events per wall second and per CPU second (the host time-shares our cores), and fires."""
    process = m.process
    fires = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for e in evs:
        fires += len(process(e))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return len(evs) / wall, len(evs) / max(cpu, 1e-9), fires


def latencies(m: Matcher | NaiveMatcher, evs: list[Event]) -> list[int]:
    process = m.process
    clock = time.perf_counter_ns
    out = []
    for e in evs:
        t0 = clock()
        process(e)
        out.append(clock() - t0)
    return out


def pct(xs: list[int], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] / 1000.0


def bench_matchers(
    n_triggers: int, evs: list[Event], rounds: int, naive_cap: int
) -> dict[str, Any]:
    specs = generate_triggers(2, n_triggers)
    # The per-trigger loop costs ~1 us per trigger per event: give it fewer events, same prefix.
    naive_evs = evs[: max(1000, min(len(evs), naive_cap // n_triggers))]
    res: dict[str, Any] = {
        "triggers": n_triggers,
        "events": len(evs),
        "naive_events": len(naive_evs),
    }
    runs: dict[str, dict[str, list[float]]] = {
        k: {"eps": [], "eps_cpu": [], "p50": [], "p99": []} for k in ("trie", "naive")
    }
    fires: dict[str, int] = {}
    for _ in range(rounds):
        for kind, stream in (("trie", evs), ("naive", naive_evs)):
            m = build(kind, specs)
            gc.collect()
            eps, eps_cpu, f = throughput(m, stream)
            fires[kind] = f
            runs[kind]["eps_cpu"].append(eps_cpu)
            m = build(kind, specs)
            lat = latencies(m, stream)
            runs[kind]["eps"].append(eps)
            runs[kind]["p50"].append(pct(lat, 0.50))
            runs[kind]["p99"].append(pct(lat, 0.99))
    # Same semantics, same events: the trie's fire count over the naive prefix must agree.
    trie = build("trie", specs)
    trie_prefix_fires = sum(len(trie.process(e)) for e in naive_evs)
    assert trie_prefix_fires == fires["naive"], (trie_prefix_fires, fires["naive"])
    for kind in runs:
        for k, v in runs[kind].items():
            res[f"{kind}_{k}"] = statistics.median(v)
    res["fires_per_event"] = fires["trie"] / len(evs)
    res["speedup"] = res["trie_eps_cpu"] / res["naive_eps_cpu"]
    st = build("trie", specs)
    res["trie_nodes"] = st.stats()["nodes"]  # type: ignore[union-attr]
    return res


def bench_runtime(n_triggers: int, raw: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole device path: emit -> queue -> SQLite group commit -> match -> window -> on_fire."""
    specs = generate_triggers(2, n_triggers)
    fires = 0

    def on_fire(task_id: str, seq: int, window: Any) -> None:
        nonlocal fires
        fires += 1

    with tempfile.TemporaryDirectory() as d:
        s = Stream(on_fire, state_dir=d, queue_size=len(raw) + 1)
        for i, spec in enumerate(specs):
            s.register_trigger(f"t{i}", spec)
        s.recover()
        t0 = time.perf_counter()
        c0 = time.process_time()
        for e in raw:
            s.emit(e["kind"], e["page"], e["event"], e["args"], e["ts"])
        emitted = time.perf_counter()
        s.process_pending()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        s.stop()
    return {
        "triggers": n_triggers,
        "events": len(raw),
        "emit_us": (emitted - t0) / len(raw) * 1e6,
        "eps_wall": len(raw) / wall,
        "eps_cpu": len(raw) / cpu,
        "fires_per_event": fires / len(raw),
    }


async def bench_tunnel(n: int, size: int) -> dict[str, Any]:
    """Round trip enqueue -> upload -> ack -> delete for one realtime result, over loopback TCP."""
    stored: dict[str, Any] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            req = json.loads(line)
            for item in req["items"]:
                stored.setdefault(item["key"], item)
            writer.write(
                (
                    json.dumps({"id": req["id"], "keys": [i["key"] for i in req["items"]]}) + "\n"
                ).encode()
            )
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1 << 22)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    counter = 0
    acked: asyncio.Queue[float] = asyncio.Queue()

    async def send(items: list[dict[str, Any]]) -> list[str]:
        nonlocal counter
        counter += 1
        writer.write((json.dumps({"id": counter, "items": items}) + "\n").encode())
        await writer.drain()
        resp = json.loads(await reader.readline())
        return resp["keys"]

    async def send_and_note(items: list[dict[str, Any]]) -> list[str]:
        keys = await send(items)
        acked.put_nowait(time.perf_counter())
        return keys

    blob = "x" * size
    with tempfile.TemporaryDirectory() as d:
        tunnel = Tunnel(Path(d), "bench-device")
        stop = asyncio.Event()
        runner = asyncio.create_task(tunnel.run(send_and_note, stop))
        rtts = []
        for i in range(n):
            t0 = time.perf_counter()
            tunnel.enqueue("bench", 1, i, {"blob": blob})
            t1 = await acked.get()
            while tunnel.pending():
                await asyncio.sleep(0)
            rtts.append(max(t1, time.perf_counter()) - t0)
        stop.set()
        await runner
        tunnel.close()
    writer.close()
    server.close()
    ms = sorted(r * 1000 for r in rtts)
    return {
        "payload_bytes": size,
        "round_trips": n,
        "p50_ms": ms[len(ms) // 2],
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "lost": n - len(stored),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--triggers", default="10,100,1000,10000")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--naive-cap", type=int, default=20_000_000, help="events x triggers for the loop"
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.quick:
        args.events, args.rounds, args.naive_cap = 20_000, 1, 2_000_000
    raw = generate_events(1, args.events)
    evs = sequence([dict(e) for e in raw])
    gc.collect()
    gc.freeze()  # the workload and tries are long-lived; keep the collector off them
    rows = [
        bench_matchers(int(n), evs, args.rounds, args.naive_cap) for n in args.triggers.split(",")
    ]
    rt = bench_runtime(1000, raw)
    tun = asyncio.run(bench_tunnel(50 if args.quick else 200, 30 * 1024))
    print(
        f"stream matching, {args.events} events of the §9 workload, median of {args.rounds} rounds"
    )
    print("ev/s per CPU-second (wall-clock ev/s in brackets); per-event latency is wall-clock")
    print(
        f"{'triggers':>8} {'fires/ev':>8} | {'trie ev/s':>21} {'p50 us':>7} {'p99 us':>7} | "
        f"{'loop ev/s':>10} {'p50 us':>8} {'p99 us':>8} | {'speedup':>7}"
    )
    for r in rows:
        print(
            f"{r['triggers']:>8} {r['fires_per_event']:>8.2f} | {r['trie_eps_cpu']:>10,.0f} "
            f"({r['trie_eps']:>9,.0f}) {r['trie_p50']:>7.1f} {r['trie_p99']:>7.1f} | "
            f"{r['naive_eps_cpu']:>10,.0f} {r['naive_p50']:>8.1f} {r['naive_p99']:>8.1f} | "
            f"{r['speedup']:>6.1f}x"
        )
    print(
        f"device path at {rt['triggers']} triggers (emit -> SQLite group commit -> match -> "
        f"window -> on_fire): {rt['eps_wall']:,.0f} events/s wall, {rt['eps_cpu']:,.0f} per "
        f"CPU-second, emit {rt['emit_us']:.2f} us/event"
    )
    print(
        f"tunnel round trip, {tun['payload_bytes'] // 1024} KB realtime result over loopback: "
        f"p50 {tun['p50_ms']:.2f} ms, p99 {tun['p99_ms']:.2f} ms, lost {tun['lost']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "processor": platform.processor(),
                "events": args.events,
                "rounds": args.rounds,
                "matching": rows,
                "runtime": rt,
                "tunnel": tun,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
