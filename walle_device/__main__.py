"""Command line: `python -m walle_device run …` (one device) or `… fleet …` (a simulated fleet)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import random
import signal
import sys
from pathlib import Path

import httpx

from walle_device.bundles import BundleCache
from walle_device.client import DeviceClient
from walle_device.enrollment import EnrollError, Identity, enroll
from walle_device.fleet import make_attrs, run_fleet
from walle_device.runner import VMRunner
from walle_device.stream import Stream
from walle_device.tunnel import Tunnel
from walle_device.vm import TaskVM, crash


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _run_device(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    identity_path = state_dir / "identity.json"
    attrs = (
        make_attrs(random.Random(args.seed))
        if args.simulate_attrs
        else {
            "app_version": args.app_version,
            "os": args.os,
            "os_version": args.os_version,
            "model": args.model,
            "region": args.region,
            "tags": args.tag,
        }
    )
    async with httpx.AsyncClient(timeout=60) as http:
        identity = Identity.load(identity_path)
        if identity is None or identity.server != args.server:
            if not args.enroll_key:
                print("this device is not enrolled yet: pass --enroll-key KEY", file=sys.stderr)
                return 2
            try:
                identity = await enroll(http, args.server, args.enroll_key, attrs)
            except (EnrollError, httpx.HTTPError) as exc:
                print(f"enrollment failed: {exc}", file=sys.stderr)
                return 1
            identity.save(identity_path)
            print(f"enrolled as {identity.device_id} in app {identity.app}", flush=True)
        # Isolated sub-interpreters, plus one walled worker process for numpy tasks and
        # tasks whose config asks for the OS wall; the crash dir is where the supervisor
        # learns which task was running if this process dies in native code.
        vm = TaskVM(crash_dir=state_dir / "crash", quarantine_after=args.quarantine_after)
        client = DeviceClient(
            identity,
            attrs,
            BundleCache(state_dir / "bundles"),
            http,
            state_dir=state_dir,
            stream=Stream(state_dir=state_dir / "stream"),
            runner=VMRunner(vm, identity.device_id, dict(attrs, id=identity.device_id)),
            tunnel=Tunnel(state_dir / "tunnel", identity.device_id),
        )
        client.listeners.append(
            lambda event, data: (
                print(f"{event}: {data}", flush=True) if event != "report" or args.verbose else None
            )
        )
        stop = asyncio.Event()
        _stop_on_signals(stop)
        events = asyncio.ensure_future(
            client.simulate_events(stop, args.simulate_events, args.seed)
        )
        try:
            await client.run(stop)
            await events
        finally:
            if not vm.close(timeout=10.0):
                # A task is stuck in native code: finalization would wait for it forever.
                print("walle: a task is stuck in native code; exiting now", file=sys.stderr)
                sys.stderr.flush()
                sys.stdout.flush()
                os._exit(0)
    return 0


async def _run_fleet(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    await run_fleet(
        args.server,
        args.enroll_key,
        args.devices,
        events_per_second=args.events_per_second,
        state_root=Path(args.state_dir) if args.state_dir else None,
        seed=args.seed,
        progress=not args.quiet,
        stop=stop,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m walle_device", description="Walle device runtime"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one device")
    run.add_argument("--server", required=True, help="e.g. http://127.0.0.1:8000")
    run.add_argument("--enroll-key", default="", help="app enrollment key (first start only)")
    run.add_argument(
        "--state-dir", required=True, help="keeps identity, bundles and pending reports"
    )
    run.add_argument("--app-version", default="10.0.1")
    run.add_argument("--os", default="android")
    run.add_argument("--os-version", default="14")
    run.add_argument("--model", default="Pixel 8")
    run.add_argument("--region", default="cn-east")
    run.add_argument("--tag", action="append", default=[])
    run.add_argument(
        "--simulate-attrs", action="store_true", help="random realistic attributes instead"
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--verbose", action="store_true")
    run.add_argument(
        "--quarantine-after",
        type=int,
        default=2,
        metavar="N",
        help="quarantine a task version after N crashes of the runtime while it ran",
    )
    run.add_argument(
        "--no-supervise",
        action="store_true",
        help="run in this process (no restart and quarantine after a native crash)",
    )
    run.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)
    run.add_argument(
        "--simulate-events",
        type=float,
        default=0.0,
        metavar="PER_S",
        help="emit synthetic app-session events at this rate (a real app calls Stream.emit)",
    )
    fleet = sub.add_parser("fleet", help="run N simulated devices")
    fleet.add_argument("--server", required=True)
    fleet.add_argument("--enroll-key", required=True)
    fleet.add_argument("--devices", type=int, default=50)
    fleet.add_argument("--seed", type=int, default=1)
    fleet.add_argument("--quiet", action="store_true")
    fleet.add_argument(
        "--events-per-second",
        type=float,
        default=0.0,
        help="per device: synthetic app events feeding task triggers (needs --state-dir)",
    )
    fleet.add_argument("--state-dir", default="", help="per-device stream logs and tunnel outboxes")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "run" and not (args.no_supervise or args.supervised):
        # The supervisor: a native crash in a task (or the engine under it) takes down
        # the child, not the device; the child is restarted and the task charged.
        child = [sys.executable, "-m", "walle_device", *(argv or sys.argv[1:]), "--supervised"]
        return crash.supervise(
            child, Path(args.state_dir) / "crash", quarantine_after=args.quarantine_after
        )
    if args.command == "run":
        if args.supervised:
            crash.die_with_parent()
        # A native crash prints every thread's Python stack; task frames read <task ID>.
        faulthandler.enable(all_threads=True)
    return asyncio.run(_run_device(args) if args.command == "run" else _run_fleet(args))


if __name__ == "__main__":
    sys.exit(main())
