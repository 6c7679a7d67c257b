"""What the browser tests share: Debian's Chromium through Playwright, a simulated fleet on
its own event loop, and screenshots. Their live server is the `server` fixture of tests/live.py
(`LIVE`: embedded, with a rollout worker)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.live import ROOT
from walle_device.fleet import build_fleet
from walle_device.stream import Stream

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ROOT / "test-artifacts" / "screenshots"
#: How every browser test's `server` runs: one SQLite daphne and the rollout worker.
LIVE = pytest.mark.live(backends=["embedded"], worker=True)


class BackgroundFleet:
    """Simulated devices on their own asyncio loop in a thread, so the test can drive a browser.

    With `streams`, every device gets an in-memory stream processor, so task triggers fire on
    the events a test emits; `runs[(uid, version)]` and `errors[...]` count each device's task
    runs as the device saw them (the test's own tally, independent of the server).
    """

    def __init__(self, server: str, enroll_key: str, n: int, *, streams: bool = False) -> None:
        self.server, self.enroll_key, self.n, self.streams = server, enroll_key, n, streams
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runs: Counter = Counter()
        self.errors: Counter = Counter()
        self.lock = threading.Lock()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self.ready.set()

    def _listen(self, uid: str, event: str, data: dict) -> None:
        if event == "run":
            with self.lock:
                self.runs[(uid, data["version"])] += 1
                self.errors[(uid, data["version"])] += 0 if data["ok"] else 1

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        fleet = await build_fleet(self.server, self.enroll_key, self.n, seed=11)
        for device in fleet.devices:
            if self.streams:
                device.stream = Stream()
            uid = device.identity.device_id
            device.listeners.append(lambda event, data, uid=uid: self._listen(uid, event, data))
        runners = [asyncio.ensure_future(d.run(self.stop)) for d in fleet.devices]
        await asyncio.wait_for(asyncio.gather(*(d.synced.wait() for d in fleet.devices)), 60)
        self.devices = fleet.devices
        self.ready.set()
        await self.stop.wait()
        await asyncio.gather(*runners, return_exceptions=True)
        await fleet.http.aclose()

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(90), "the simulated fleet did not connect"
        if self.error:
            raise self.error

    def emit(self, kind: str, page: str, event: str, times: int) -> None:
        """Every device sees `times` app events (the stream takes events from any thread)."""
        for device in self.devices:
            for _ in range(times):
                device.stream.emit(kind, page, event)

    def pending(self) -> int:
        """Messages (reports, run stats, uploads) the server has not acknowledged yet."""
        return sum(d.pending for d in self.devices)

    def close(self) -> None:
        if getattr(self, "loop", None) and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(20)


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (scripts/ensure-browser.sh installs it)"
        print(f"skipping the browser test: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
