"""The fleet simulator: N virtual devices with realistic attributes in one process."""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from walle_device import identities
from walle_device.bundles import BundleCache
from walle_device.client import DeviceClient
from walle_device.enrollment import Identity, enroll
from walle_device.runner import VMRunner, shared_vm
from walle_device.simhttp import KeepAlivePool
from walle_device.stream import Stream
from walle_device.tunnel import Tunnel

# (model, os, weight): a phone mix skewed the way real Android/iOS fleets are.
MODELS = [
    ("Pixel 8", "android", 8),
    ("Pixel 7a", "android", 6),
    ("Galaxy S24", "android", 12),
    ("Galaxy A54", "android", 14),
    ("Redmi Note 13", "android", 14),
    ("Moto G84", "android", 5),
    ("OnePlus 12", "android", 4),
    ("iPhone 15", "ios", 15),
    ("iPhone 13", "ios", 12),
    ("iPhone SE", "ios", 5),
]
OS_VERSIONS = {"android": ["12", "13", "14", "15"], "ios": ["16.7", "17.5", "18.1"]}
APP_VERSIONS = ["9.1.0", "9.2.3", "9.3.0", "10.0.1", "10.1.0"]
REGIONS = ["cn-east", "cn-south", "sg", "eu-west", "us-east"]
TAGS = ["beta", "vip", "low-end", "wifi", "new-user"]


def make_attrs(rng: random.Random) -> dict:
    model, os_name, _ = rng.choices(MODELS, weights=[w for *_, w in MODELS])[0]
    return {
        "app_version": rng.choices(APP_VERSIONS, weights=[1, 2, 4, 6, 3])[0],
        "os": os_name,
        "os_version": rng.choice(OS_VERSIONS[os_name]),
        "model": model,
        "region": rng.choices(REGIONS, weights=[5, 4, 2, 2, 2])[0],
        "tags": sorted(rng.sample(TAGS, k=rng.choice([0, 0, 1, 1, 2]))),
        "engine_version": "0.1.0",
    }


class GatedHTTP:
    """The HTTP clients a whole simulated fleet shares, entered by at most `limit` requests
    at a time. Thousands of devices pulling at once otherwise all wait inside httpcore's
    pool, whose every hand-out scans the waiters and the connections: at 10k devices the
    simulator, not the server, set the pace of the pull phase (bench/README.md). A few
    clients with a few connections each keep every pool small; requests take them in turn.

    GETs (the devices' manifest and file downloads, the bulk of the fleet's HTTP) go through
    `KeepAlivePool` instead, the same requests without httpx's per-request machinery
    (walle_device/simhttp.py); enrollment and other POSTs stay on httpx."""

    def __init__(
        self,
        clients: httpx.AsyncClient | list[httpx.AsyncClient],
        limit: int,
        pool: KeepAlivePool | None = None,
    ) -> None:
        self.clients = clients if isinstance(clients, list) else [clients]
        per_client = max(1, limit // len(self.clients))
        self.gates = [asyncio.Semaphore(per_client) for _ in self.clients]
        self._turn = itertools.cycle(range(len(self.clients)))
        self.pool = pool

    @property
    def client(self) -> httpx.AsyncClient:
        return self.clients[0]

    async def get(self, *args, **kwargs) -> httpx.Response:
        if (
            self.pool is not None
            and len(args) == 1
            and not kwargs
            and str(args[0]).startswith("http://")  # https (a server behind TLS) stays on httpx
        ):
            return await self.pool.get(str(args[0]))
        i = next(self._turn)
        async with self.gates[i]:
            return await self.clients[i].get(*args, **kwargs)

    async def post(self, *args, **kwargs) -> httpx.Response:
        i = next(self._turn)
        async with self.gates[i]:
            return await self.clients[i].post(*args, **kwargs)

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
        for client in self.clients:
            await client.aclose()


def shared_clients(connections: int = 64, clients: int = 8) -> list[httpx.AsyncClient]:
    """`clients` HTTP clients with `connections` kept-alive connections between them."""
    each = max(1, connections // clients)
    return [
        httpx.AsyncClient(
            timeout=60, limits=httpx.Limits(max_connections=each, max_keepalive_connections=each)
        )
        for _ in range(clients)
    ]


@dataclass
class Fleet:
    devices: list[DeviceClient]
    http: GatedHTTP
    reused: int = 0  # devices an earlier start enrolled (from the identities file)

    def summary(self) -> dict:
        versions: Counter = Counter()
        for d in self.devices:
            for task, av in d.cache.all_active().items():
                versions[f"{task} v{av.version}"] += 1
        return {
            "connected": sum(1 for d in self.devices if d.connected.is_set()),
            "devices": len(self.devices),
            "versions": dict(versions),
            "failed": sum(d.stats.failed for d in self.devices),
            "runs": sum(d.stats.runs for d in self.devices),
            "queued": sum(d.tunnel.pending() for d in self.devices if d.tunnel is not None),
        }


async def build_fleet(
    server: str,
    enroll_key: str,
    n: int,
    *,
    seed: int = 1,
    http: httpx.AsyncClient | None = None,
    concurrency: int = 64,
    vm: object | None = None,
    identity_for: Callable[[int], Identity] | None = None,
    identities_file: Path | None = None,
) -> Fleet:
    """Enroll `n` simulated devices (concurrently, bounded) and return their clients.

    `identity_for(i)` skips enrollment (a benchmark peer that has no enrollment API); with
    `identities_file`, reuse the devices enrolled by an earlier start (and store new ones)."""
    connections = 64
    # A caller's own client gets every request; the fleet's own clients leave GETs to the pool.
    gated = (
        GatedHTTP(http, connections)
        if http is not None
        else GatedHTTP(shared_clients(connections), connections, KeepAlivePool(connections))
    )
    rng = random.Random(seed)
    attrs_list = [make_attrs(rng) for _ in range(n)]
    gate = asyncio.Semaphore(concurrency)
    stored: list[Identity | None] = (
        list(identities.load(identities_file, server)[:n]) if identities_file else []
    )
    known = await identities.still_enrolled(gated, stored) if stored else []
    # A device the server forgot (its database was reset) enrolls again in its place.
    stored = [i if ok else None for i, ok in zip(stored, known, strict=True)]

    async def one(i: int) -> DeviceClient:
        identity = stored[i] if i < len(stored) else None
        if identity_for is not None:
            identity = identity_for(i)
        elif identity is None:
            async with gate:
                identity = await enroll(gated, server, enroll_key, attrs_list[i])
        # One VM for the whole simulated fleet, tasks scoped per device (the process's
        # shared VM unless the caller passes one).
        runner = VMRunner(
            vm or shared_vm(), identity.device_id, dict(attrs_list[i], id=identity.device_id)
        )
        return DeviceClient(
            identity,
            attrs_list[i],
            BundleCache(None),
            gated,
            rng=random.Random(seed * 1_000_003 + i),
            runner=runner,
        )

    devices = await asyncio.gather(*(one(i) for i in range(n)))
    if identities_file:
        identities.save(identities_file, [d.identity for d in devices])
    return Fleet(devices=list(devices), http=gated, reused=sum(1 for i in stored if i))


async def run_fleet(
    server: str,
    enroll_key: str,
    n: int,
    *,
    seed: int = 1,
    progress: bool = True,
    stop: asyncio.Event | None = None,
    events_per_second: float = 0.0,
    state_root: Path | None = None,
) -> None:
    stop = stop or asyncio.Event()
    from walle_device.vm import TaskVM

    vm = TaskVM(process_workers=0)
    fleet = await build_fleet(
        server,
        enroll_key,
        n,
        seed=seed,
        vm=vm,
        identities_file=state_root / "identities.json" if state_root is not None else None,
    )
    if events_per_second and state_root is not None:
        # Each simulated device gets its own stream log and tunnel outbox, like a phone.
        for device in fleet.devices:
            home = state_root / device.identity.device_id
            device.stream = Stream(state_dir=home / "stream")
            device.tunnel = Tunnel(home / "tunnel", device.identity.device_id)
    print(
        f"fleet: {n} devices of {fleet.devices[0].identity.app if n else '-'} "
        f"({fleet.reused} from an earlier start, {n - fleet.reused} newly enrolled)",
        flush=True,
    )
    tasks = [asyncio.ensure_future(d.run(stop)) for d in fleet.devices]
    if events_per_second and state_root is not None:
        tasks += [
            asyncio.ensure_future(d.simulate_events(stop, events_per_second, seed=seed * 7919 + i))
            for i, d in enumerate(fleet.devices)
        ]
    last = ""
    try:
        while not stop.is_set():
            if progress:
                s = fleet.summary()
                versions = (
                    ", ".join(f"{k}: {v}" for k, v in sorted(s["versions"].items()))
                    or "no task yet"
                )
                line = f"fleet: {s['connected']}/{s['devices']} connected | {versions} | runs {s['runs']} | failed {s['failed']} | results queued {s['queued']}"
                if line != last:
                    stamp = time.strftime("%H:%M:%S")
                    sys.stdout.write(f"[{stamp}] {line}\n")
                    sys.stdout.flush()
                    last = line
            try:
                await asyncio.wait_for(stop.wait(), timeout=2)
            except TimeoutError:
                pass
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await fleet.http.aclose()
        vm.close()


__all__ = ["Fleet", "Identity", "build_fleet", "make_attrs", "run_fleet"]
