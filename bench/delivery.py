"""Delivery benchmark: a release's full cycle to N connected devices, for walle embedded,
walle scale-out and a same-protocol asyncio peer, against the same simulator in the same run.

    .venv/bin/python bench/delivery.py                          # 1,000 devices, all three systems
    .venv/bin/python bench/delivery.py --devices 10000          # 10,000 devices
    .venv/bin/python bench/delivery.py --devices 20000 --systems scaleout   # the scale-out target
    .venv/bin/python bench/delivery.py --devices 10000 --faults  # + kill -9 / dropped connections

Systems (`--systems`, default all three):

  embedded  one daphne process, SQLite, in-process channel layer (tests.live.live_server)
  scaleout  two daphne processes, PostgreSQL + Redis (throwaway database, devices split over both)
  peer      a minimal asyncio `websockets` server with in-memory state and no Django, no database:
            the same hello -> desired -> pull (signed manifest with the same inlined files) ->
            run -> report/run_stats -> ack exchange, answered by the same simulator. It is the
            floor: what the protocol costs on this machine at this moment.

The simulated devices (walle_device.fleet: the real DeviceClient, tasks run in the VM) live in
separate client processes (one per 5,000 devices). Once every device is connected and its hello
answered, a task version (main.py + a 4 KiB data file) is released to all devices. Per system:

  notice      start call (t0, time.time_ns) -> the device's client handled `notify`
  all done    t0 -> the server first counted N succeeded (polled every 0.25 s)
  missed      devices that had not succeeded by --timeout
  server CPU  CPU seconds of the server processes (daphne; not PostgreSQL/Redis, which other
              jobs share) from t0 to all done; simulator CPU the same for the client processes
  enroll      devices enrolled per second (walle only; the peer has no enrollment)
  connect     seconds until every device's first hello was answered
  storm       every device drops its socket at once; seconds until all have a fresh `desired`
  idle socket server RSS growth per connected idle device (one daphne)

With --faults (walle systems): during the release 20% of the devices drop their connection, and
in the scale-out system one daphne is killed with SIGKILL and started again; the run then checks
that every device converged and that every report a device sent is counted exactly once.

JSON goes to bench/out/delivery-<N>.json. Internal roles (spawned by the bench itself):
--role fleet | peer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
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
TICK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def emit(event: str, **fields) -> None:
    """A control line to the parent process (stdout is the control channel of a role)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def read_command() -> str:
    line = await asyncio.to_thread(sys.stdin.readline)
    return line.strip() or "stop"  # EOF: the parent went away


def _gc_clock() -> list[float]:
    """Wall seconds the garbage collector ran in this process from now on (a live one-item
    list); under load they include time the process waited for a CPU."""
    import gc

    spent = [0.0]
    started = [0.0]

    def clock(phase: str, _info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - started[0]

    gc.callbacks.append(clock)
    return spent


# ---------------------------------------------------------------------------------------------
# role: fleet (Walle device clients, against walle or the peer)


async def fleet_main(args) -> None:
    from walle_device.enrollment import Identity
    from walle_device.fleet import build_fleet

    servers = args.server.split(",")
    identity_for = None
    if args.peer_key:

        def identity_for(i: int) -> Identity:
            uid = f"peer-{args.seed}-{i}"
            return Identity(uid, f"{uid}.x", "bench", args.peer_key, servers[i % len(servers)])

    t = time.monotonic()
    fleet = await build_fleet(
        servers[0], args.enroll_key or "", args.devices, seed=args.seed, identity_for=identity_for
    )
    enroll_s = time.monotonic() - t
    for i, device in enumerate(fleet.devices):  # spread over every server process
        device.identity.server = servers[i % len(servers)]
    emit("enrolled", n=len(fleet.devices), seconds=round(enroll_s, 2))

    n = len(fleet.devices)
    notice_ns = [0] * n
    succeeded_ns = [0] * n
    failed = [""] * n
    hello_ok = [asyncio.Event() for _ in range(n)]
    sent_reports: list[list[tuple[int, str]]] = [[] for _ in range(n)]

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
                sent_reports[i].append((data["deployment"], data["state"]))
                if data.get("state") == "succeeded" and not succeeded_ns[i]:
                    succeeded_ns[i] = time.time_ns()
                elif data.get("state") == "failed":
                    failed[i] = f"{data.get('error_code')}: {data.get('error', '')[:200]}"

        device.listeners.append(listener)

    # Connect in waves, so the bench measures delivery, not a SYN storm at one port.
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
        seconds=round(time.monotonic() - t, 2),
    )
    # Everything built so far (the fleet, its sockets) lives until the end: out of the
    # collector's way, so collections during the release scan only what the release makes.
    import gc

    gc.freeze()
    # The release's own objects (tasks, messages, responses) mostly die young by reference
    # counting: collect less often. With the default thresholds the collector ran 6-8 s (wall)
    # of a 10k release in the two simulator processes (run F, load 6-9), 1.0-1.2 s with these
    # (run G, load 4-5); the simulator's CPU seconds did not move measurably (bench/README.md).
    threshold = os.environ.get("WALLE_BENCH_GC_THRESHOLD", "50000,20,100")
    gc.set_threshold(*(int(x) for x in threshold.split(",")))
    gc_time = _gc_clock()
    sampler = None
    if args.sample_out:  # the simulator's own stacks, from connected to collected
        from walle_web.sampler import Sampler

        sampler = Sampler(Path(args.sample_out), main_only=True)
        sampler.start()

    while True:
        command = await read_command()
        if command == "collect":
            if sampler is not None:
                sampler.stop()
                sampler = None
            emit(
                "results",
                notice_ns=notice_ns,
                succeeded_ns=succeeded_ns,
                failed=[f for f in failed if f],
                connects=sum(d.stats.connects for d in fleet.devices),
                notices=sum(d.stats.notices for d in fleet.devices),
                gc_s=round(gc_time[0], 2),
                pending=sum(d.pending for d in fleet.devices),
                errors=[e for d in fleet.devices for e in d.stats.errors][:20],
                reports={
                    d.identity.device_id: sent_reports[i] for i, d in enumerate(fleet.devices)
                },
                versions=[
                    (d.cache.active("bench-task").version if d.cache.active("bench-task") else 0)
                    for d in fleet.devices
                ],
            )
        elif command.startswith("drop "):
            # Abort the TCP connection of a share of the devices, as a flaky network does.
            share = float(command.split()[1])
            rng = random.Random(args.seed)
            victims = [d for d in fleet.devices if d._ws is not None and rng.random() < share]
            for d in victims:
                d._ws.transport.abort()
            emit("dropped", n=len(victims))
        elif command == "storm":
            for event in hello_ok:
                event.clear()
            connects = sum(d.stats.connects for d in fleet.devices)
            busy = sum(d.stats.busy for d in fleet.devices)

            def handshake_errors() -> int:  # handshakes answered with an HTTP error status
                return sum(e.startswith("handshake") for d in fleet.devices for e in d.stats.errors)

            refused = handshake_errors()
            t = time.monotonic()
            for d in fleet.devices:
                if d._ws is not None:
                    d._ws.transport.abort()
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(e.wait() for e in hello_ok)), args.connect_timeout
                )
            except TimeoutError:
                pass
            emit(
                "stormed",
                hello_ok=sum(e.is_set() for e in hello_ok),
                seconds=round(time.monotonic() - t, 2),
                # sessions opened, 1013 closes, refused handshakes during the storm
                connects=sum(d.stats.connects for d in fleet.devices) - connects,
                busy=sum(d.stats.busy for d in fleet.devices) - busy,
                refused=handshake_errors() - refused,
            )
        else:
            break
    stop.set()
    await asyncio.gather(*runners, return_exceptions=True)
    await fleet.http.aclose()


# ---------------------------------------------------------------------------------------------
# role: peer (the same protocol, in memory, no Django)


def peer_manifest(key) -> tuple[bytes, str, dict[str, bytes]]:
    """The task version as walle builds it: canonical manifest, Ed25519 signature, the same
    small files inlined. Returns (manifest document, digest, blobs)."""
    from walle_device.protocol import canonical_json

    files = {"data.bin": TASK_DATA, "main.py": TASK_MAIN}
    manifest = {
        "app": "bench",
        "task": "bench-task",
        "version": 1,
        "parent": None,
        "entry_point": "main.py",
        "config": {},
        "files": [
            {"path": p, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
            for p, d in sorted(files.items())
        ],
    }
    payload = canonical_json(manifest)
    digest = hashlib.sha256(payload).hexdigest()
    blobs = {hashlib.sha256(d).hexdigest(): d for d in files.values()}
    document = {
        "manifest": manifest,
        "signature": base64.b64encode(key.sign(payload)).decode(),
        "digest": digest,
        "inline": {sha: base64.b64encode(d).decode() for sha, d in blobs.items()},
    }
    return json.dumps(document, separators=(",", ":")).encode(), digest, blobs


async def peer_main(args) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from websockets.asyncio.server import broadcast, serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    from walle_device import protocol

    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()
    document, digest, blobs = peer_manifest(key)
    sockets: dict[str, object] = {}
    deployments: dict[str, int] = {}  # device uid -> deployment id (once released)
    reported: set[tuple[int, str]] = set()
    succeeded: set[int] = set()
    released = False

    def content(connection, request):
        if request.path.startswith("/ws/"):
            return None
        body, ctype = None, "application/octet-stream"
        if request.path == f"/content/manifests/{digest}.json":
            body, ctype = document, "application/json"
        elif request.path.startswith("/content/blobs/"):
            body = blobs.get(request.path.rsplit("/", 1)[1])
        if body is None:
            return connection.respond(404, "not found\n")
        headers = Headers(
            [("Content-Type", ctype), ("Content-Length", str(len(body))), ("ETag", f'"{digest}"')]
        )
        return Response(200, "OK", headers, body)

    def desired(uid: str) -> list[dict]:
        if not released:
            return []
        return [
            protocol.DesiredTask(
                "bench-task",
                1,
                digest,
                f"/content/manifests/{digest}.json",
                deployments[uid],
                release=1,
            ).to_wire()
        ]

    async def handler(ws):
        token = ws.request.headers.get("Authorization", "").removeprefix("Bearer ")
        uid = token.partition(".")[0]
        if not uid:
            return
        sockets[uid] = ws
        try:
            async for frame in ws:
                msg = protocol.decode(frame)
                mtype = msg["type"]
                if mtype == "hello":
                    reply = protocol.message(
                        "desired", tasks=desired(uid), server_time=time.time(), ref=msg.get("id")
                    )
                elif mtype == "report":
                    reported.add((msg["deployment"], msg["state"]))
                    if msg["state"] == "succeeded":
                        succeeded.add(msg["deployment"])
                    reply = protocol.message("ack", ref=msg["id"])
                elif mtype == "upload":
                    reply = protocol.message(
                        "upload_ack", keys=[i["key"] for i in msg["items"]], ref=msg["id"]
                    )
                elif mtype == "ping":
                    reply = protocol.message("pong", t=msg.get("t", time.time()))
                else:
                    reply = protocol.message("ack", ref=msg["id"])
                await ws.send(protocol.encode(reply))
        except Exception:
            pass
        finally:
            if sockets.get(uid) is ws:
                del sockets[uid]

    frame = protocol.encode(protocol.message("notify", task="bench-task", version=1, digest=digest))
    async with serve(
        handler,
        "127.0.0.1",
        0,
        backlog=4096,
        max_size=2**20,
        process_request=content,
        ping_interval=300,  # as walle's daphne (tests/live.py)
        ping_timeout=120,
        # daphne declines the devices' permessage-deflate offer; the peer did accept it and
        # spent its own and the simulator's CPU compressing every small frame.
        compression=None,
    ) as server:
        emit("listening", port=server.sockets[0].getsockname()[1], key=public, pid=os.getpid())
        while True:
            command = await read_command()
            if command == "release":
                released = True
                for i, uid in enumerate(sorted(sockets)):
                    deployments[uid] = i + 1
                broadcast(list(sockets.values()), frame)
                emit("released", n=len(deployments))
            elif command == "count":
                emit("count", succeeded=len(succeeded), reports=len(reported), n=len(deployments))
            else:
                break


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

    def expect(self, event: str, timeout: float = 900) -> dict:
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
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def summarize(latencies_s: list[float | None]) -> dict:
    got = [v for v in latencies_s if v is not None]
    return {
        "n": len(latencies_s),
        "p50_s": pct(got, 50),
        "p99_s": pct(got, 99),
        "max_s": max(got) if got else None,
        "missed": len(latencies_s) - len(got),
    }


def start_fleets(args, work: Path, name: str, servers: list[str], **extra) -> list[Role]:
    argv_extra = []
    for key, value in extra.items():
        argv_extra += [f"--{key.replace('_', '-')}", str(value)]
    return [
        Role(
            f"{name}-fleet-{k}",
            ["--role", "fleet", "--server", ",".join(servers), "--devices", str(m),
             "--seed", str(k + 1), "--wave", str(args.wave),
             "--connect-timeout", str(args.connect_timeout), *argv_extra,
             *(["--sample-out", str(OUT_DIR / f"delivery-{name}-{args.devices}-fleet-{k}"
                                                 "-samples.folded")] if args.sample else [])],
            work / f"{name}-fleet-{k}.log",
        )
        for k, m in enumerate(split(args.devices, args.fleet_procs))
    ]  # fmt: skip


def collect(fleets: list[Role], t0: int) -> dict:
    out = {"notice": [], "succeeded": [], "failed": [], "connects": 0, "notices": 0, "pending": 0}
    out["gc_s"] = 0.0
    out["errors"], out["reports"], out["versions"] = [], {}, []
    for f in fleets:
        f.send("collect")
        r = f.expect("results")
        out["notice"] += [(x - t0) / 1e9 if x else None for x in r["notice_ns"]]
        out["succeeded"] += [(x - t0) / 1e9 if x else None for x in r["succeeded_ns"]]
        out["failed"] += r["failed"]
        for k in ("connects", "notices", "pending", "gc_s"):
            out[k] += r[k]
        out["errors"] += r["errors"]
        out["reports"].update(r["reports"])
        out["versions"] += r["versions"]
    return out


def process_counters(urls: list[str], token: str) -> dict[str, float]:
    """The device-path counters of the server processes (devices/counters.py), summed."""
    total: dict[str, float] = {}
    for url in urls:
        try:
            text = httpx.get(
                f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30
            ).text
        except httpx.HTTPError:
            continue  # a process that is down counts nothing
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            # Counters only: a gauge's difference over the storm says nothing.
            if name.startswith("walle_process_") and name.endswith("_total"):
                key = name.removeprefix("walle_process_").removesuffix("_total")
                total[key] = total.get(key, 0) + float(value)
    return total


def storm(fleets: list[Role]) -> dict:
    t = time.monotonic()
    for f in fleets:
        f.send("storm")
    results = [f.expect("stormed") for f in fleets]
    return {
        "hello_ok": sum(r["hello_ok"] for r in results),
        "seconds": round(time.monotonic() - t, 2),
        "connects": sum(r["connects"] for r in results),
        "busy": sum(r["busy"] for r in results),
        "refused": sum(r["refused"] for r in results),
    }


def run_walle(args, work: Path, system: str) -> dict:
    from tests.live import live_server

    n = args.devices
    metrics_token = os.urandom(16).hex()
    extra_env = {
        "WALLE_DEBUG": "0",
        "WALLE_SECRET_KEY": os.urandom(32).hex(),
        "WALLE_METRICS_TOKEN": metrics_token,
    }
    samples = OUT_DIR / f"delivery-{system}-{args.devices}-samples.folded"
    if args.sample or args.sample_storm or args.sample_enroll:
        extra_env["WALLE_PROFILE_SAMPLES"] = str(samples)
    backend = "scaleout" if system == "scaleout" else "embedded"
    out: dict = {"system": system}
    with live_server(work / system, backend, worker=True, extra_env=extra_env) as srv:
        daphnes = [p.pid for p in srv.procs[: len(srv.urls)]]
        api = srv.api()
        rss_idle = sum(rss_bytes(p) for p in daphnes)
        if args.sample_enroll:
            os.kill(daphnes[0], signal.SIGUSR1)
        fleets = start_fleets(args, work, system, srv.urls, enroll_key=srv.enroll_key)
        try:
            # Enrollment as the simulators timed it (their start-up is not the server's).
            enroll_s = max(f.expect("enrolled")["seconds"] for f in fleets)
            if args.sample_enroll:
                os.kill(daphnes[0], signal.SIGUSR2)
                print(f"{system}: enrollment stack samples in {samples}", flush=True)
            t = time.monotonic()
            ready = [f.expect("ready") for f in fleets]
            connect_s = time.monotonic() - t
            hello_ok = sum(r["hello_ok"] for r in ready)
            time.sleep(2.0)  # every socket registered, the server idle again
            rss_connected = sum(rss_bytes(p) for p in daphnes)
            print(f"{system}: {n} enrolled in {enroll_s:.1f}s ({n / enroll_s:.0f}/s); "
                  f"{hello_ok} connected + hello answered in {connect_s:.1f}s", flush=True)  # fmt: skip
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

            # Server = the daphne processes and the rollout worker. A daphne killed by --faults
            # takes its CPU seconds with it (the restarted one counts from zero).
            server_cpu0 = {p.pid: cpu_seconds(p.pid) for p in srv.procs}
            profiler = None
            if args.py_spy:  # `pip install py-spy` in the venv; not a project dependency
                spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                profiler = subprocess.Popen(
                    [spy, "record", "-r", "100", "--nonblocking", "--format", "raw", "--threads",
                     "-o", str(OUT_DIR / f"delivery-{system}-{n}.folded"), "--pid", str(daphnes[0])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.0)
            if args.sample:  # walle_web/sampler.py in the first daphne, over the release
                os.kill(daphnes[0], signal.SIGUSR1)
            fleet_cpu0 = sum(cpu_seconds(f.proc.pid) for f in fleets)
            counters0 = process_counters(srv.urls, metrics_token)
            t0 = time.time_ns()
            started = api.post(f"/api/v1/releases/{release_id}/start/", timeout=600)
            start_call_s = (time.time_ns() - t0) / 1e9
            started.raise_for_status()
            print(f"{system}: release started ({start_call_s:.2f}s for the start call)", flush=True)
            faults = {}
            all_ok_s, series, poll_errors = None, [], 0
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                try:
                    counts = api.get(f"/api/v1/releases/{release_id}/", timeout=20).json()["counts"]
                except httpx.HTTPError:
                    poll_errors += 1
                    continue
                now_s = (time.time_ns() - t0) / 1e9
                series.append({"t_s": round(now_s, 3), **counts})
                if args.faults and not faults and counts.get("succeeded", 0) >= n // 4:
                    faults = inject_faults(srv, fleets, system)
                if counts.get("succeeded") == n:
                    all_ok_s = now_s
                    break
                time.sleep(0.25)
            server_cpu = sum(cpu_seconds(p.pid) - server_cpu0.get(p.pid, 0.0) for p in srv.procs)
            # The server processes' own counters over the release (a restarted process
            # counts from zero): notice_fanout_seconds is the notices' write time.
            counters1 = process_counters(srv.urls, metrics_token)
            server_counters = {k: round(v - counters0.get(k, 0), 3) for k, v in counters1.items()}
            print(
                f"{system}: notices written in "
                f"{server_counters.get('notice_fanout_seconds', 0):.3f}s (server, first frame to last)",
                flush=True,
            )
            if args.sample:
                os.kill(daphnes[0], signal.SIGUSR2)
                print(f"{system}: stack samples in {samples}", flush=True)
            if profiler is not None:
                profiler.send_signal(2)
                profiler.wait(timeout=120)
            fleet_cpu = sum(cpu_seconds(f.proc.pid) for f in fleets) - fleet_cpu0
            time.sleep(1.0)
            got = collect(fleets, t0)
            out.update(
                enroll_s=round(enroll_s, 2),
                enroll_per_s=round(n / enroll_s, 1),
                connect_s=round(connect_s, 2),
                hello_ok=hello_ok,
                idle_socket_kib=round((rss_connected - rss_idle) / max(hello_ok, 1) / 1024, 1),
                start_call_s=round(start_call_s, 3),
                notice=summarize(got["notice"]),
                succeeded=summarize(got["succeeded"]),
                all_succeeded_s=all_ok_s,
                final_counts=series[-1] if series else {},
                server_cpu_s=round(server_cpu, 1),
                server_counters=server_counters,
                simulator_cpu_s=round(fleet_cpu, 1),
                simulator_gc_s=round(got["gc_s"], 2),
                poll_errors=poll_errors,
                connects=got["connects"],
                notices=got["notices"],
                unacked=got["pending"],
                failed_reasons=got["failed"][:10],
                errors=got["errors"][:10],
                faults=faults,
                counts_series=series,
            )
            if args.faults:
                out["fault_check"] = check_exactly_once(srv, release_id, got)
            if args.storm:
                before = process_counters(srv.urls, metrics_token)
                if args.sample_storm:
                    os.kill(daphnes[0], signal.SIGUSR1)
                out["storm"] = storm(fleets)
                if args.sample_storm:
                    os.kill(daphnes[0], signal.SIGUSR2)
                    print(f"{system}: storm stack samples in {samples}", flush=True)
                after = process_counters(srv.urls, metrics_token)
                out["storm"]["server"] = {k: after[k] - before.get(k, 0) for k in after}
                print(f"{system}: reconnect storm {out['storm']}", flush=True)
        finally:
            for f in fleets:
                f.close()
    return out


def inject_faults(srv, fleets: list[Role], system: str) -> dict:
    """Mid-release: drop 20% of the devices' connections; in the scale-out pair, kill -9 one
    daphne and start it again."""
    done = {"dropped": 0}
    for f in fleets:
        f.send("drop 0.2")
    done["dropped"] = sum(f.expect("dropped")["n"] for f in fleets)
    if system == "scaleout":
        srv.kill(1)
        srv.restart(1)
        done["killed"] = "daphne 1 (SIGKILL), restarted"
    print(f"{system}: faults injected: {done}", flush=True)
    return done


def check_exactly_once(srv, release_id: int, got: dict) -> dict:
    """Every report a device sent is one history row on the server, and nothing else is."""
    rows = server_events(srv, release_id)
    device_side = {(uid, dep, state) for uid, reps in got["reports"].items() for dep, state in reps}
    server_side = set(rows)
    return {
        "device_reports": sum(len(r) for r in got["reports"].values()),
        "server_events": len(rows),
        "duplicates_on_server": len(rows) - len(server_side),
        "sent_not_counted": len(device_side - server_side),
        "counted_not_sent": len(server_side - device_side),
        "not_converged": sum(1 for v in got["versions"] if v != 1),
    }


def server_events(srv, release_id: int) -> list[tuple]:
    return srv.query(
        "SELECT dv.uid, d.id, e.state FROM releases_deploymentevent e "
        "JOIN releases_deployment d ON d.id = e.deployment_id "
        "JOIN devices_device dv ON dv.id = d.device_id "
        "WHERE d.release_id = %s AND e.source = 'device'",
        (release_id,),
    )


def run_peer(args, work: Path) -> dict:
    n = args.devices
    peer = Role("peer", ["--role", "peer"], work / "peer.log")
    fleets: list[Role] = []
    out: dict = {"system": "peer"}
    try:
        hello = peer.expect("listening")
        url = f"http://127.0.0.1:{hello['port']}"
        fleets = start_fleets(args, work, "peer", [url], peer_key=hello["key"])
        t = time.monotonic()
        for f in fleets:
            f.expect("enrolled")
        ready = [f.expect("ready") for f in fleets]
        connect_s = time.monotonic() - t
        hello_ok = sum(r["hello_ok"] for r in ready)
        print(f"peer: {hello_ok} connected + hello answered in {connect_s:.1f}s", flush=True)
        time.sleep(2.0)
        server_cpu0 = cpu_seconds(hello["pid"])
        fleet_cpu0 = sum(cpu_seconds(f.proc.pid) for f in fleets)
        t0 = time.time_ns()
        peer.send("release")
        peer.expect("released")
        all_ok_s = None
        count = {}
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            peer.send("count")
            count = peer.expect("count")
            if count["succeeded"] >= n:
                all_ok_s = (time.time_ns() - t0) / 1e9
                break
            time.sleep(0.25)
        server_cpu = cpu_seconds(hello["pid"]) - server_cpu0
        fleet_cpu = sum(cpu_seconds(f.proc.pid) for f in fleets) - fleet_cpu0
        time.sleep(1.0)
        got = collect(fleets, t0)
        out.update(
            connect_s=round(connect_s, 2),
            hello_ok=hello_ok,
            notice=summarize(got["notice"]),
            succeeded=summarize(got["succeeded"]),
            all_succeeded_s=all_ok_s,
            final_counts=count,
            server_cpu_s=round(server_cpu, 1),
            simulator_cpu_s=round(fleet_cpu, 1),
            simulator_gc_s=round(got["gc_s"], 2),
            unacked=got["pending"],
            failed_reasons=got["failed"][:10],
        )
        if args.storm:
            out["storm"] = storm(fleets)
            print(f"peer: reconnect storm {out['storm']}", flush=True)
    finally:
        for f in fleets:
            f.close()
        peer.close()
    return out


def fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table(result: dict) -> str:
    n = result["devices"]
    lines = [
        f"N = {n} devices in {result['fleet_procs']} simulator process(es); load average "
        f"{' '.join(f'{x:.2f}' for x in result['machine']['loadavg_before'])} before, "
        f"{' '.join(f'{x:.2f}' for x in result['machine'].get('loadavg_after', (0, 0, 0)))} after",
        "",
        "| system | notice p50 s | notice p99 s | all succeeded s | missed | server CPU s "
        "| simulator CPU s | start call s | connect s | enroll /s | storm s | idle socket KiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("embedded", "scaleout", "peer"):
        r = result["systems"].get(name)
        if not r or "notice" not in r:
            continue
        missed = n - (r["final_counts"].get("succeeded", 0) if r.get("final_counts") else 0)
        lines.append(
            f"| {name} | {fmt(r['notice']['p50_s'])} | {fmt(r['notice']['p99_s'])} | "
            f"{fmt(r['all_succeeded_s'], 1)} | {missed} | {r['server_cpu_s']} | "
            f"{r['simulator_cpu_s']} | {fmt(r.get('start_call_s'))} | {r['connect_s']} | "
            f"{r.get('enroll_per_s', '–')} | {fmt((r.get('storm') or {}).get('seconds'), 1)} | "
            f"{r.get('idle_socket_kib', '–')} |"
        )
    peer = result["systems"].get("peer", {}).get("all_succeeded_s")
    for name in ("embedded", "scaleout"):
        r = result["systems"].get(name)
        if r and r.get("all_succeeded_s") and peer:
            lines.append(f"\n{name}: full cycle {r['all_succeeded_s'] / peer:.2f}x the peer's")
        if r and r.get("fault_check"):
            lines.append(f"{name}: faults {r['faults']}; check {r['fault_check']}")
    return "\n".join(lines)


def source_tree() -> str:
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
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tree": source_tree(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "nofile": raise_nofile(),
            "loadavg_before": os.getloadavg(),
        },
        "systems": {},
    }
    out = Path(args.out or OUT_DIR / f"delivery-{args.devices}.json")
    try:
        for system in args.systems.split(","):
            if system == "scaleout":
                from tests.live import scaleout_unavailable

                if why := scaleout_unavailable():
                    print(f"skipping scaleout: {why}")
                    continue
            print(f"--- {system} (load {os.getloadavg()[0]:.2f})", flush=True)
            try:
                if system == "peer":
                    result["systems"][system] = run_peer(args, work)
                else:
                    result["systems"][system] = run_walle(args, work, system)
            except Exception as exc:  # one system failing is a result too
                result["systems"][system] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"{system} failed: {exc}", flush=True)
            result["machine"].setdefault("loadavg_during", {})[system] = os.getloadavg()
            out.write_text(json.dumps(result, indent=1))
    finally:
        result["machine"]["loadavg_after"] = os.getloadavg()
        out.write_text(json.dumps(result, indent=1))
        if args.keep:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(result))
    print(f"\nwrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--systems", default="peer,embedded,scaleout")
    p.add_argument("--fleet-procs", type=int, default=0, help="client processes (default 1 per 5k)")
    p.add_argument("--timeout", type=float, default=0, help="seconds to wait for all succeeded")
    p.add_argument(
        "--wave", type=int, default=200, help="devices per client process connecting at a time"
    )
    p.add_argument("--connect-timeout", type=float, default=600, help="seconds for all to connect")
    p.add_argument(
        "--faults",
        action="store_true",
        help="drop 20%% of connections (and kill -9 a scale-out daphne) mid-release",
    )
    p.add_argument(
        "--no-storm", dest="storm", action="store_false", help="skip the reconnect storm"
    )
    p.add_argument("--keep", action="store_true", help="keep the server and fleet logs")
    p.add_argument(
        "--py-spy", action="store_true", help="profile the first daphne during the release"
    )
    p.add_argument(
        "--sample",
        action="store_true",
        help="sample the first daphne's stacks during the release (walle_web/sampler.py)",
    )
    p.add_argument(
        "--sample-storm",
        action="store_true",
        help="sample the first daphne's stacks during the reconnect storm (overwrites --sample's)",
    )
    p.add_argument(
        "--sample-enroll",
        action="store_true",
        help="sample the first daphne's stacks while the fleet enrolls (overwrites --sample's)",
    )
    p.add_argument("--sample-out", help=argparse.SUPPRESS)  # fleet role: where --sample writes
    p.add_argument("--out")
    p.add_argument("--role", default="bench", choices=["bench", "fleet", "peer"])
    p.add_argument("--server")
    p.add_argument("--enroll-key")
    p.add_argument("--peer-key")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()  # fmt: skip
    raise_nofile()
    if args.role == "fleet":
        asyncio.run(fleet_main(args))
    elif args.role == "peer":
        asyncio.run(peer_main(args))
    else:
        args.fleet_procs = args.fleet_procs or max(1, -(-args.devices // 5000))
        args.timeout = args.timeout or max(90.0, args.devices * 0.03)
        orchestrate(args)


if __name__ == "__main__":
    main()
