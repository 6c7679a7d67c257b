"""Delivery benchmark: release notice and full cycle to N connected devices, next to a bare
`websockets` broadcast of the same frame in the same run (DESIGN §9).

    .venv/bin/python bench/delivery.py                     # 1,000 devices
    .venv/bin/python bench/delivery.py --devices 10000     # 10,000 devices, 2 fleet processes

One daphne process (the embedded configuration: SQLite + in-process channel layer, started by
tests.live.live_server) serves every device; the simulated devices (walle_device.DeviceClient)
run in separate fleet processes so the server does not share an event loop with them. Once every
device is connected and its `hello` is answered, the bench uploads a task version through the
REST API, creates a release and starts it. Per device it measures, from just before the start
call (time.time_ns(), comparable across processes on one machine):

  notice     until the device's client handled the `notify` frame
  succeeded  until the device's client sent its `succeeded` report
  all (srv)  until GET /api/v1/releases/<id>/ first showed succeeded == N (polled every 0.25 s)

The peer: a bare `websockets` asyncio server in its own process, the same N connections from bare
clients in the same number of client processes, the same notify frame sent with
`websockets.broadcast()` and, as a second row, with `await ws.send()` per socket. Its latency is
measured from just before the broadcast call.

Internal roles (spawned by the bench itself): --role fleet | wsserver | wsfleet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT_DIR = ROOT / "bench" / "out"
TASK_MAIN = b"def run(ctx):\n    return len(ctx.read('data.bin'))\n"
TASK_DATA = bytes(random.Random(1).getrandbits(8) for _ in range(4096))


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def emit(event: str, **fields) -> None:
    """A control line to the parent process (stdout is the control channel of a role)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def read_command() -> str:
    line = await asyncio.to_thread(sys.stdin.readline)
    return line.strip() or "stop"  # EOF: the parent went away


# ---------------------------------------------------------------------------------------------
# role: fleet (Walle device clients)


async def fleet_main(args) -> None:
    from walle_device.fleet import build_fleet

    t = time.monotonic()
    fleet = await build_fleet(args.server, args.enroll_key, args.devices, seed=args.seed)
    emit("enrolled", n=len(fleet.devices), seconds=round(time.monotonic() - t, 2))

    n = len(fleet.devices)
    notice_ns = [0] * n
    succeeded_ns = [0] * n
    failed = [""] * n
    hello_ok = [asyncio.Event() for _ in range(n)]

    for i, device in enumerate(fleet.devices):
        original = device._handle

        def handle(msg, i=i, original=original):
            if msg.get("type") == "desired":
                hello_ok[i].set()
            original(msg)

        device._handle = handle  # see when the server answered hello (bench-only hook)

        def listener(event, data, i=i):
            if event == "notify" and not notice_ns[i]:
                notice_ns[i] = time.time_ns()
            elif event == "report":
                if data.get("state") == "succeeded" and not succeeded_ns[i]:
                    succeeded_ns[i] = time.time_ns()
                elif data.get("state") == "failed":
                    failed[i] = f"{data.get('error_code')}: {data.get('error', '')[:200]}"

        device.listeners.append(listener)

    # Connect in waves, so the bench measures delivery, not a 10k-socket SYN storm at one port.
    stop = asyncio.Event()
    t = time.monotonic()
    deadline = t + args.connect_timeout
    runners = []
    for start in range(0, n, args.wave):
        wave = range(start, min(n, start + args.wave))
        runners += [asyncio.ensure_future(fleet.devices[i].run(stop)) for i in wave]
        try:
            await asyncio.wait_for(
                asyncio.gather(*(hello_ok[i].wait() for i in wave)),
                max(0.1, deadline - time.monotonic()),
            )
        except TimeoutError:
            break
    emit(
        "ready",
        n=n,
        hello_ok=sum(e.is_set() for e in hello_ok),
        started=len(runners),
        seconds=round(time.monotonic() - t, 2),
    )

    command = await read_command()
    while command == "collect":
        emit(
            "results",
            notice_ns=notice_ns,
            succeeded_ns=succeeded_ns,
            failed=[f for f in failed if f],
            connects=sum(d.stats.connects for d in fleet.devices),
            notices=sum(d.stats.notices for d in fleet.devices),
            pending=sum(d.pending for d in fleet.devices),
            errors=[e for d in fleet.devices for e in d.stats.errors][:20],
        )
        command = await read_command()
    stop.set()
    await asyncio.gather(*runners, return_exceptions=True)
    await fleet.http.aclose()


# ---------------------------------------------------------------------------------------------
# role: wsserver (the bare websockets peer)


async def wsserver_main(args) -> None:
    from websockets.asyncio.server import broadcast, serve

    conns: set = set()

    async def handler(ws):
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    async with serve(handler, "127.0.0.1", 0, backlog=4096, max_size=2**20) as server:
        port = server.sockets[0].getsockname()[1]
        emit("listening", port=port)
        while True:
            command = await read_command()
            if command == "count":
                emit("count", n=len(conns))
            elif command.startswith("send "):
                mode, frame = command[5:].split(" ", 1)
                targets = list(conns)
                t0 = time.time_ns()
                if mode == "broadcast":
                    broadcast(targets, frame)
                else:
                    for ws in targets:
                        await ws.send(frame)
                t1 = time.time_ns()
                emit("sent", t0=t0, t1=t1, n=len(targets))
            else:
                break


# role: wsfleet (bare websockets clients)


async def wsfleet_main(args) -> None:
    from websockets.asyncio.client import connect

    n = args.devices
    arrivals: list[list[int]] = [[] for _ in range(n)]
    ready = [asyncio.Event() for _ in range(n)]
    stop = asyncio.Event()

    async def client(i: int) -> None:
        async with connect(args.url, open_timeout=60, max_size=2**20) as ws:
            ready[i].set()
            receiver = asyncio.ensure_future(_recv_loop(ws, arrivals[i]))
            await stop.wait()
            receiver.cancel()

    async def _recv_loop(ws, out: list[int]) -> None:
        async for _ in ws:
            out.append(time.time_ns())

    tasks = []
    t = time.monotonic()
    for start in range(0, n, args.wave):
        wave = range(start, min(n, start + args.wave))
        tasks += [asyncio.ensure_future(client(i)) for i in wave]
        await asyncio.wait_for(asyncio.gather(*(ready[i].wait() for i in wave)), 300)
    emit("ready", n=n, seconds=round(time.monotonic() - t, 2))
    command = await read_command()
    while command == "collect":
        emit("results", arrivals=arrivals)
        for a in arrivals:
            a.clear()
        command = await read_command()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# the orchestrator


class Role:
    """A child process of this script speaking JSON lines on stdout, commands on stdin."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(Path(__file__).resolve()), *argv],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            bufsize=1,
        )

    def expect(self, event: str, timeout: float = 600) -> dict:
        # Blocking readline; the roles always answer or die (then readline returns "").
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(
                    f"{self.name} exited (rc={self.proc.poll()}) waiting for {event}"
                )
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue  # a stray print
            if msg.get("event") == event:
                return msg
        raise TimeoutError(f"{self.name}: no {event} in {timeout}s")

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        try:
            self.send("stop")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def summarize(latencies_s: list[float | None]) -> dict:
    got = [v for v in latencies_s if v is not None]
    return {
        "n": len(latencies_s),
        "p50_s": pct(got, 50),
        "p99_s": pct(got, 99),
        "max_s": max(got) if got else None,
        "missed": len(latencies_s) - len(got),
        "first_s": min(got) if got else None,
        "spread_s": max(got) - min(got) if got else None,
    }


def notify_frame() -> str:
    from walle_device import protocol

    return protocol.encode(
        protocol.message("notify", task="bench-task", version=1, digest="0" * 64)
    )


def run_walle(args, work: Path, result: dict) -> None:
    from tests.live import live_server

    n = args.devices
    # Production settings (DEBUG off): with DEBUG on, Django keeps every query and runs an extra
    # quoting query per query on SQLite, which is not what a deployed server pays.
    extra_env = {
        "WALLE_DEBUG": "1" if args.debug else "0",
        "WALLE_SECRET_KEY": os.urandom(32).hex(),
    }
    with live_server(work, extra_env=extra_env) as srv:
        daphne_pid = srv.procs[0].pid
        result["walle"] = {"server": srv.url, "daphne_pid": daphne_pid}
        print(f"daphne pid {daphne_pid} at {srv.url}", flush=True)
        api = srv.api()
        # Create the release key up front, so key generation is not part of enrollment timing
        # (it also raced on first use until tasks/signing.py wrote it atomically).
        srv.manage("shell", "-c", "from tasks.signing import release_key; release_key()")
        t = time.monotonic()
        fleets = [
            Role(
                f"fleet-{k}",
                [
                    "--role", "fleet", "--server", srv.url, "--enroll-key", srv.enroll_key,
                    "--devices", str(m), "--seed", str(k + 1), "--wave", str(args.wave),
                    "--connect-timeout", str(args.connect_timeout),
                ],
                work / f"fleet-{k}.log",
            )
            for k, m in enumerate(split(n, args.fleet_procs))
        ]  # fmt: skip
        profiler = None
        try:
            for f in fleets:
                f.expect("enrolled")
            enroll_s = time.monotonic() - t
            ready = [f.expect("ready") for f in fleets]
            connect_s = time.monotonic() - t - enroll_s
            hello_ok = sum(r["hello_ok"] for r in ready)
            print(
                f"walle: {n} enrolled in {enroll_s:.1f}s; {hello_ok} connected + hello answered"
                f" in {connect_s:.1f}s"
            )
            time.sleep(1.0)  # every socket registered, the server idle again

            task = api.post("/api/v1/tasks/", json={"app": srv.app, "name": "bench-task"})
            task.raise_for_status()
            version = api.post(
                f"/api/v1/tasks/{task.json()['id']}/versions/",
                files=[("files", ("main.py", TASK_MAIN)), ("files", ("data.bin", TASK_DATA))],
                data={"entry_point": "main.py"},
            )
            version.raise_for_status()
            created = api.post("/api/v1/releases/", json={"version": version.json()["id"]})
            created.raise_for_status()
            release_id = created.json()["id"]
            time.sleep(0.5)

            if args.py_spy:
                spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                out = OUT_DIR / f"delivery-daphne-{n}.txt"
                profiler = subprocess.Popen(
                    [spy, "record", "-r", "200", "--format", "raw", "-o", str(out),
                     "--pid", str(daphne_pid), "--threads", "--idle"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.0)

            t0 = time.time_ns()
            started = api.post(f"/api/v1/releases/{release_id}/start/", timeout=600)
            t_start_resp = time.time_ns()
            started.raise_for_status()
            print(f"walle: release started ({(t_start_resp - t0) / 1e9:.2f}s for the start call)")

            # Server side: poll the counts until every device succeeded (or the timeout). A
            # poll that times out is recorded, not fatal: an overloaded server is a result.
            series = []
            poll_errors = 0
            all_ok_ns = None
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                try:
                    counts = api.get(f"/api/v1/releases/{release_id}/", timeout=20).json()["counts"]
                except httpx.HTTPError:
                    poll_errors += 1
                    continue
                now = time.time_ns()
                series.append({"t_s": round((now - t0) / 1e9, 3), **counts})
                if counts.get("succeeded", 0) + counts.get("failed", 0) >= n:
                    all_ok_ns = now if counts.get("succeeded") == n else None
                    break
                time.sleep(0.25)
            if profiler:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=120)
            time.sleep(1.0)

            notice, succeeded, failed = [], [], []
            extra = {"connects": 0, "notices": 0, "pending": 0, "errors": []}
            for f in fleets:
                f.send("collect")
                r = f.expect("results")
                notice += [(x - t0) / 1e9 if x else None for x in r["notice_ns"]]
                succeeded += [(x - t0) / 1e9 if x else None for x in r["succeeded_ns"]]
                failed += r["failed"]
                for k in ("connects", "notices", "pending"):
                    extra[k] += r[k]
                extra["errors"] += r["errors"]
            result["walle"].update(
                {
                    "enroll_s": round(enroll_s, 2),
                    "connect_s": round(connect_s, 2),
                    "ready": ready,
                    "hello_ok": hello_ok,
                    "start_call_s": (t_start_resp - t0) / 1e9,
                    "notice": summarize(notice),
                    "succeeded": summarize(succeeded),
                    "all_succeeded_server_s": (all_ok_ns - t0) / 1e9 if all_ok_ns else None,
                    "final_counts": series[-1] if series else {},
                    "poll_errors": poll_errors,
                    "counts_series": series,
                    "failed_reasons": failed[:20],
                    **extra,
                }
            )
        finally:
            if profiler and profiler.poll() is None:
                profiler.kill()
            for f in fleets:
                f.close()


def run_peer(args, work: Path, result: dict) -> None:
    n = args.devices
    frame = notify_frame()
    server = Role("wsserver", ["--role", "wsserver"], work / "wsserver.log")
    clients = []
    try:
        port = server.expect("listening")["port"]
        clients = [
            Role(
                f"wsfleet-{k}",
                ["--role", "wsfleet", "--url", f"ws://127.0.0.1:{port}/", "--devices", str(m),
                 "--wave", str(args.wave)],
                work / f"wsfleet-{k}.log",
            )
            for k, m in enumerate(split(n, args.fleet_procs))
        ]  # fmt: skip
        for c in clients:
            c.expect("ready")
        server.send("count")
        assert server.expect("count")["n"] == n
        result["peer"] = {}
        rounds: dict[str, list[dict]] = {"broadcast": [], "send": []}
        for _ in range(args.peer_rounds):  # interleaved rounds; the median round is reported
            for mode in ("broadcast", "send"):
                time.sleep(1.0)
                server.send(f"send {mode} {frame}")
                sent = server.expect("sent")
                time.sleep(2.0 + n / 5000)
                latencies = []
                for c in clients:
                    c.send("collect")
                    arrivals = c.expect("results")["arrivals"]
                    latencies += [(a[0] - sent["t0"]) / 1e9 if a else None for a in arrivals]
                rounds[mode].append(
                    {"send_call_s": (sent["t1"] - sent["t0"]) / 1e9, "notice": summarize(latencies)}
                )
        for mode, rs in rounds.items():
            ordered = sorted(rs, key=lambda r: r["notice"]["p99_s"] or float("inf"))
            result["peer"][mode] = {
                **ordered[len(ordered) // 2],
                "rounds_p99_s": [r["notice"]["p99_s"] for r in rs],
            }
    finally:
        for c in clients:
            c.close()
        server.close()


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def table(result: dict) -> str:
    n = result["devices"]
    lines = [
        f"N = {n} devices, {result['fleet_procs']} client process(es), one server process",
        "",
        "| system | what | p50 s | p99 s | max s | first→last s | missed |",
        "|---|---|---|---|---|---|---|",
    ]
    w = result.get("walle")
    if w and "notice" in w:
        for key, label in (("notice", "notice"), ("succeeded", "succeeded report sent")):
            s = w[key]
            lines.append(
                f"| walle (daphne) | {label} | {fmt(s['p50_s'])} | {fmt(s['p99_s'])} | "
                f"{fmt(s['max_s'])} | {fmt(s['spread_s'])} | {s['missed']} |"
            )
        lines.append(
            f"| walle (daphne) | server counts: all {n} succeeded | | | "
            f"{fmt(w['all_succeeded_server_s'])} | | {n - w['final_counts'].get('succeeded', 0)} |"
        )
    for mode, p in (result.get("peer") or {}).items():
        s = p["notice"]
        label = "broadcast()" if mode == "broadcast" else "await send() loop"
        lines.append(
            f"| bare websockets {label} | notice | {fmt(s['p50_s'])} | {fmt(s['p99_s'])} | "
            f"{fmt(s['max_s'])} | {fmt(s['spread_s'])} | {s['missed']} |"
        )
    if w and "notice" in w:
        lines += [
            "",
            f"walle: start call {w['start_call_s']:.3f}s; enroll {w['enroll_s']}s; "
            f"{w['hello_ok']} connected + hello in {w['connect_s']}s; notices {w['notices']}, "
            f"connects {w['connects']}, unacked {w['pending']}, failed {len(w['failed_reasons'])}",
        ]
        peer = result.get("peer", {}).get("broadcast")
        if peer and w["notice"]["p99_s"] and peer["notice"]["p99_s"]:
            lines.append(
                f"notice p99 ratio walle / websockets broadcast: "
                f"{w['notice']['p99_s'] / peer['notice']['p99_s']:.1f}x"
            )
    return "\n".join(lines)


def source_tree() -> str:
    """The commit measured, and whether the working tree had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--short"], cwd=ROOT, capture_output=True, text=True
        ).stdout.count("\n")
    except OSError:
        return "unknown"
    return f"{head} + {dirty} uncommitted paths" if head else "not a git checkout"


def orchestrate(args) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="walle-bench-delivery-"))
    result = {
        "bench": "delivery",
        "devices": args.devices,
        "fleet_procs": args.fleet_procs,
        "timeout_s": args.timeout,
        "debug": args.debug,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tree": source_tree(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "nofile": raise_nofile(),
            "loadavg_before": os.getloadavg(),
        },
    }
    try:
        if not args.skip_peer:
            run_peer(args, work, result)
            print(table(result), flush=True)
        if not args.skip_walle:
            run_walle(args, work, result)
    finally:
        result["machine"]["loadavg_after"] = os.getloadavg()
        out = Path(args.out or OUT_DIR / f"delivery-{args.devices}.json")
        out.write_text(json.dumps(result, indent=1))
        if args.keep:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(result))
    print(f"\nwrote {out}")
    shutil.copy(out, OUT_DIR / "delivery.json")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--fleet-procs", type=int, default=0, help="client processes (default 1 per 5k)")
    p.add_argument("--timeout", type=float, default=0, help="seconds to wait for all succeeded")
    p.add_argument(
        "--wave", type=int, default=100, help="devices per client process connecting at a time"
    )
    p.add_argument("--connect-timeout", type=float, default=600, help="seconds for all to connect")
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--peer-rounds", type=int, default=3)
    p.add_argument("--skip-walle", action="store_true")
    p.add_argument("--debug", action="store_true", help="run daphne with WALLE_DEBUG=1")
    p.add_argument("--py-spy", action="store_true", help="profile daphne during the release")
    p.add_argument("--keep", action="store_true", help="keep the server and fleet logs")
    p.add_argument("--out")
    p.add_argument("--role", default="bench", choices=["bench", "fleet", "wsserver", "wsfleet"])
    p.add_argument("--server")
    p.add_argument("--enroll-key")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--url")
    args = p.parse_args()
    raise_nofile()
    if args.role == "fleet":
        asyncio.run(fleet_main(args))
    elif args.role == "wsserver":
        asyncio.run(wsserver_main(args))
    elif args.role == "wsfleet":
        asyncio.run(wsfleet_main(args))
    else:
        args.fleet_procs = args.fleet_procs or max(1, -(-args.devices // 5000))
        args.timeout = args.timeout or max(60.0, args.devices * 0.03)
        orchestrate(args)


if __name__ == "__main__":
    main()
