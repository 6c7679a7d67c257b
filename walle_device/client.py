"""The device runtime's connection to the cloud: hello/desired sync, doorbell, pull, reports.

The socket is a doorbell and the server's database the mailbox: on every (re)connect and on
every notice the device says what it runs (`hello`) and the server answers what it should run
(`desired`). The device then pulls what it lacks over plain HTTP, verifies it, activates it,
runs it and reports each step. Reports and results stay pending until the server acks them
and are sent again after a reconnect, so a dropped connection loses nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from walle_device import protocol
from walle_device.bundles import ActiveVersion, BundleCache, VerifyError, verify_manifest
from walle_device.runner import VMRunner, shared_vm
from walle_device.stream import Stream
from walle_device.tunnel import Tunnel, TunnelError

if TYPE_CHECKING:
    from walle_device.vm.result import RunResult

log = logging.getLogger("walle_device")

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0
# Close code of a server that could not take the connection now (RFC 6455: try again later).
TRY_AGAIN_LATER = 1013
# A download that cannot reach the server (refused, reset, 5xx, 429) is not the content's
# fault: the device keeps trying, with capped exponential backoff and full jitter, for as long
# as the deployment is still wanted, up to this long (a restart, a deploy, a failover), before
# such failures count against the release's `max_retries`.
DOWNLOAD_OUTAGE_S = 600.0
DOWNLOAD_BACKOFF_CAP_S = 15.0
# Answers that say "not now" rather than "no".
_UNAVAILABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class EnrollError(Exception):
    """The server refused to enroll this device."""


class ServerUnreachable(VerifyError):
    """A download that did not reach the server or got a "not now" answer: worth waiting for."""

    def __init__(self, message: str) -> None:
        super().__init__("download_failed", message)


@dataclass
class Identity:
    """What a device keeps after enrolling: its id, secret token and the platform's release key."""

    device_id: str
    token: str
    app: str
    release_key: str
    server: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Identity | None:
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


async def enroll(
    http: httpx.AsyncClient, server: str, enroll_key: str, attrs: dict, attempts: int = 8
) -> Identity:
    rng = random.Random()
    for attempt in range(attempts):
        response = await http.post(
            urljoin(server, "/api/v1/devices/enroll/"),
            json={"enrollment_key": enroll_key, "attrs": attrs},
        )
        if response.status_code not in (429, 503) or attempt == attempts - 1:
            break
        # A busy server says when to come back; nothing was stored.
        retry_after = float(response.headers.get("Retry-After", "1") or 1)
        await asyncio.sleep(backoff_delay(attempt, rng, retry_after))
    if response.status_code != 201:
        raise EnrollError(f"enrollment refused ({response.status_code}): {response.text[:300]}")
    body = response.json()
    return Identity(
        device_id=body["device_id"],
        token=body["token"],
        app=body["app"],
        release_key=body["release_key"],
        server=server,
    )


def ws_url(server: str) -> str:
    base = server.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/ws/device/"
    return "ws://" + base.removeprefix("http://") + "/ws/device/"


def backoff_delay(attempt: int, rng: random.Random, retry_after: float = 0.0) -> float:
    """Exponential backoff with full jitter: a fleet that lost its server does not return in
    lockstep. A server's `retry_after` hint sets the scale instead when it is longer."""
    delay = rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2**attempt)))
    if retry_after > 0:
        delay = max(delay, rng.uniform(0.5, 1.5) * min(retry_after, BACKOFF_CAP_S))
    return delay


TaskRunner = Callable[[ActiveVersion, dict[str, bytes], dict], "RunResult"]


def _upload_batches(items: list[dict]) -> list[list[dict]]:
    """Split a run's upload items over `upload` messages that each fit one frame."""
    budget = protocol.MAX_FRAME_BYTES - 4096  # the envelope: type, id, version, brackets
    batches: list[list[dict]] = [[]]
    used = 0
    for item in items:
        size = len(json.dumps(item, separators=(",", ":")).encode()) + 1
        full = len(batches[-1]) >= protocol.MAX_UPLOAD_ITEMS or used + size > budget
        if batches[-1] and full:
            batches.append([])
            used = 0
        batches[-1].append(item)
        used += size
    return batches


@dataclass
class DeviceStats:
    connects: int = 0
    notices: int = 0
    deployed: int = 0
    failed: int = 0
    runs: int = 0
    run_errors: int = 0
    first_notice_at: float | None = None
    last_succeeded_at: float | None = None
    errors: list[str] = field(default_factory=list)


class DeviceClient:
    """One device: keeps a connection, converges to the desired state, reports every step."""

    def __init__(
        self,
        identity: Identity,
        attrs: dict,
        cache: BundleCache,
        http: httpx.AsyncClient,
        *,
        state_dir: Path | None = None,
        rng: random.Random | None = None,
        runner: TaskRunner | None = None,
        pull_jitter_s: float = 0.0,
        stream: Stream | None = None,
        tunnel: Tunnel | None = None,
    ) -> None:
        self.identity = identity
        self.attrs = attrs
        self.cache = cache
        self.http = http
        self.state_dir = state_dir
        self.rng = rng or random.Random()
        # Every task runs in the VM; several clients in one process share one by default.
        self.runner = runner or VMRunner(
            shared_vm(), identity.device_id, dict(attrs, id=identity.device_id)
        )
        self.pull_jitter_s = pull_jitter_s
        self.stats = DeviceStats()
        self.connected = asyncio.Event()
        self._ws = None
        self._desired: list[dict] = []
        self._sync_task: asyncio.Task | None = None
        self._sync_again = False
        self._upload_seq = 0
        # Messages awaiting the server's ack, by message id; re-sent after a reconnect.
        self._pending: dict[str, dict] = self._load_pending()
        self._reported: set[tuple[int, str]] = {
            (m["deployment"], m["state"]) for m in self._pending.values() if m["type"] == "report"
        }
        self.listeners: list[Callable[[str, dict], None]] = []
        # The data pipeline: triggers of active versions fire task runs; results leave
        # through the durable tunnel when there is one (real devices), else as plain uploads.
        self.stream = stream
        self.tunnel = tunnel
        self._loop: asyncio.AbstractEventLoop | None = None
        self._upload_waiters: dict[str, asyncio.Future] = {}
        self._background: set[asyncio.Task] = set()
        self._hello_queued = False
        self._hello_id = ""
        self._retry_after = 0.0  # the server's last "busy" hint, for the next reconnect
        self._served = False  # this session got a `desired`: the server is taking us
        # Set when a `desired` arrives: a download waiting out an outage tries again at once.
        self._desired_arrived = asyncio.Event()

    # persistence of pending messages (real devices; simulated ones keep them in memory)
    def _pending_path(self) -> Path | None:
        return self.state_dir / "pending.json" if self.state_dir else None

    def _load_pending(self) -> dict[str, dict]:
        path = self._pending_path()
        if path and path.is_file():
            return json.loads(path.read_text())
        return {}

    def _save_pending(self) -> None:
        path = self._pending_path()
        if path:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._pending))
            os.replace(tmp, path)

    def _spawn(self, coro) -> None:
        # Keep a reference: the event loop holds tasks only weakly.
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _emit(self, event: str, data: dict) -> None:
        for listener in self.listeners:
            listener(event, data)

    # connection
    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set, reconnecting with backoff."""
        self._loop = asyncio.get_running_loop()
        tunnel_task = (
            asyncio.ensure_future(self.tunnel.run(self._tunnel_send, stop)) if self.tunnel else None
        )
        if self.stream is not None:
            self.stream.on_fire = self._on_fire
            for task, active in self.cache.all_active().items():
                self._register_trigger(task, active)
            if self.tunnel is not None:
                # Fires accepted before a crash whose results were not queued yet: run them now.
                for task, fire_seq, window in self.tunnel.pending_fires():
                    self._spawn_fire(task, fire_seq, window)
            self.stream.start()
        attempt = 0
        while not stop.is_set():
            try:
                async with connect(
                    ws_url(self.identity.server),
                    additional_headers={"Authorization": f"Bearer {self.identity.token}"},
                    open_timeout=30,
                    # A server busy for 20 s (the default) must not set off a reconnect storm;
                    # one ping a minute keeps NAT mappings and finds a dead server.
                    ping_interval=60,
                    ping_timeout=120,
                    max_size=protocol.MAX_FRAME_BYTES * 4,
                ) as ws:
                    await self._session(ws, stop)
            except InvalidStatus as exc:
                status = exc.response.status_code
                log.warning(
                    "device %s: server refused the connection (%s)", self.identity.device_id, status
                )
                self.stats.errors.append(f"handshake {status}")
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == TRY_AGAIN_LATER:
                    log.info("device %s: server busy, reconnecting later", self.identity.device_id)
                else:
                    log.info("device %s: connection lost: %s", self.identity.device_id, exc)
            except (OSError, WebSocketException, TimeoutError) as exc:
                log.info("device %s: connection lost: %s", self.identity.device_id, exc)
            finally:
                self._ws = None
                self.connected.clear()
            if stop.is_set():
                break
            if self._served:
                attempt = 0  # the server took us: a later drop starts the backoff afresh
            delay = backoff_delay(attempt, self.rng, self._retry_after)
            self._retry_after = 0.0
            self._served = False
            attempt += 1
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
        if self._sync_task:
            self._sync_task.cancel()
        if self.stream is not None:
            await asyncio.to_thread(self.stream.stop)
        if tunnel_task is not None:
            await asyncio.gather(tunnel_task, return_exceptions=True)

    async def _session(self, ws, stop: asyncio.Event) -> None:
        self._ws = ws
        self.stats.connects += 1
        await self._send_hello()
        for msg in list(self._pending.values()):
            await self._send(msg)
        self.connected.set()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receiver = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait(
                    {receiver, stopper}, return_when=asyncio.FIRST_COMPLETED
                )
                if stopper in done:
                    receiver.cancel()
                    await ws.close()
                    return
                self._handle(
                    protocol.decode(receiver.result(), max_bytes=protocol.MAX_FRAME_BYTES * 4)
                )
        finally:
            stopper.cancel()

    async def _send(self, msg: dict) -> None:
        if self._ws is not None:
            try:
                await self._ws.send(protocol.encode(msg))
            except WebSocketException:
                pass  # pending messages go again after the reconnect

    async def _send_hello(self) -> None:
        self._hello_queued = False
        current = {
            task: {"version": av.version, "digest": av.digest}
            for task, av in self.cache.all_active().items()
        }
        self._hello_id = uuid.uuid4().hex
        await self._send(
            protocol.message("hello", attrs=self.attrs, current=current, id=self._hello_id)
        )

    async def _send_again_later(self, ref: str | None, delay: float) -> None:
        """The server was busy and stored nothing: send that message again after `delay`."""
        await asyncio.sleep(delay * self.rng.uniform(1.0, 1.5))
        if ref is not None and ref in self._pending:
            await self._send(self._pending[ref])
        elif ref is not None and ref == self._hello_id:
            await self._send_hello()

    def _handle(self, msg: dict) -> None:
        mtype = msg["type"]
        if mtype == "desired":
            self._served = True
            self._desired = msg["tasks"]
            self._desired_arrived.set()
            self._schedule_sync()
        elif mtype == "notify":
            self.stats.notices += 1
            if self.stats.first_notice_at is None:
                self.stats.first_notice_at = time.time()
            self._emit("notify", msg)
            # Ring → look in the mailbox. Even for a version already running here: the notice
            # may come from a new release (a rollback) that waits for this device's report.
            if not self._hello_queued:
                self._hello_queued = True
                self._spawn(self._send_hello())
        elif mtype in ("ack", "upload_ack"):
            ref = msg.get("ref")
            waiter = self._upload_waiters.pop(ref, None) if ref else None
            if waiter is not None and not waiter.done():
                waiter.set_result(msg["keys"])
            if ref and self._pending.pop(ref, None) is not None:
                self._save_pending()
        elif mtype == "error":
            log.warning(
                "device %s: server error %s: %s",
                self.identity.device_id,
                msg["code"],
                msg["message"],
            )
            self.stats.errors.append(f"{msg['code']}: {msg['message']}")
            if msg.get("retry_after") is not None:
                # Busy: nothing was stored. Send the message again later (or, before a close
                # with 1013, reconnect later); it stays pending meanwhile.
                self._retry_after = float(msg["retry_after"])
                if msg.get("ref"):
                    self._spawn(self._send_again_later(msg["ref"], self._retry_after))
            # A rejected message will be rejected again: do not resend it forever.
            if (
                msg.get("ref")
                and msg["code"] in protocol.FINAL_ERROR_CODES
                and self._pending.pop(msg["ref"], None) is not None
            ):
                self._save_pending()

    # convergence
    def _schedule_sync(self) -> None:
        if self._sync_task is not None and not self._sync_task.done():
            self._sync_again = True
            return
        self._sync_task = asyncio.ensure_future(self._sync())

    async def _sync(self) -> None:
        while True:
            self._sync_again = False
            for entry in list(self._desired):
                try:
                    await self._converge(entry)
                except Exception as exc:  # a bug in one task's deploy must not stop the others
                    log.exception(
                        "device %s: deploying %s failed", self.identity.device_id, entry.get("task")
                    )
                    self.stats.errors.append(f"{type(exc).__name__}: {exc}")
            if not self._sync_again:
                return

    async def _converge(self, entry: dict) -> None:
        deployment = entry.get("deployment")
        active = self.cache.active(entry["task"])
        if (
            active is not None
            and active.version == entry["version"]
            and active.digest == entry["digest"]
        ):
            if (
                deployment is not None
                and (deployment, "succeeded") not in self._reported
                and (deployment, "failed") not in self._reported
            ):
                # Already running this version (e.g. the same version released again): confirm it.
                await self._report(deployment, "installed")
                await self._run_and_report(active, deployment)
            return
        if deployment is None:
            # A pinned version: converge quietly, there is no deployment to report on.
            try:
                await self._pull(entry)
            except VerifyError as exc:
                self.stats.errors.append(
                    f"pinned {entry['task']} v{entry['version']}: {exc.message}"
                )
            return
        if (deployment, "failed") in self._reported:
            return  # this deployment already failed here; a new release or retry brings a new one
        cached = self._cached_previous(entry)
        if cached is not None:
            # Rollback to the version before: its manifest was verified when it was pulled and
            # its files are still cached, so switch back without any download.
            active = self.cache.activate(
                entry["task"], cached["version"], cached["digest"], cached["manifest"]
            )
            await self._report(deployment, "installed")
            await self._run_and_report(active, deployment)
            return
        await self._report(deployment, "downloading")
        jitter = float(entry.get("pull_jitter_s", self.pull_jitter_s) or 0)
        if jitter:
            await asyncio.sleep(self.rng.uniform(0, jitter))
        retries = int(entry.get("max_retries", 3))
        base_s = float(entry.get("retry_backoff_s", 2.0))
        attempt = 0
        outage_tries = 0
        outage_since: float | None = None
        while True:
            try:
                active = await self._pull(entry)
                break
            except VerifyError as exc:
                if isinstance(exc, ServerUnreachable):
                    if not self._wanted(deployment):
                        return  # the server no longer asks for it (cancelled, superseded)
                    outage_since = outage_since or time.monotonic()
                    if time.monotonic() - outage_since < DOWNLOAD_OUTAGE_S:
                        delay = self.rng.uniform(
                            0, min(DOWNLOAD_BACKOFF_CAP_S, max(base_s, 0.5) * 2**outage_tries)
                        )
                        outage_tries += 1
                        await self._wait_for_server(delay)
                        continue
                # Wrong content stays wrong: only a failed download is worth another try.
                if exc.code == "download_failed" and attempt < retries:
                    attempt += 1
                    await asyncio.sleep(
                        self.rng.uniform(0, float(entry.get("retry_backoff_s", 2.0)) * 2**attempt)
                    )
                    continue
                self.stats.failed += 1
                await self._report(deployment, "failed", error_code=exc.code, error=exc.message)
                return
        await self._report(deployment, "installed")
        await self._run_and_report(active, deployment)

    def _wanted(self, deployment: int) -> bool:
        """Whether the latest desired state still names this deployment."""
        return any(e.get("deployment") == deployment for e in self._desired)

    async def _wait_for_server(self, delay: float) -> None:
        """Sleep `delay`, or less if a `desired` arrives meanwhile (the server is back)."""
        self._desired_arrived.clear()
        try:
            await asyncio.wait_for(self._desired_arrived.wait(), delay)
        except TimeoutError:
            pass

    def _cached_previous(self, entry: dict) -> dict | None:
        current = self.cache.active(entry["task"])
        if (
            current is not None
            and current.previous
            and current.previous["digest"] == entry["digest"]
        ):
            if all(self.cache.has(f["sha256"]) for f in current.previous["manifest"]["files"]):
                return current.previous
        return None

    async def _pull(self, entry: dict) -> ActiveVersion:
        """Fetch the manifest and the files this device lacks, verify all, activate atomically."""
        current = self.cache.active(entry["task"])
        if (
            current is not None
            and current.previous
            and current.previous["digest"] == entry["digest"]
        ):
            # Rollback to the version before: its manifest was verified when it was pulled and
            # its files are still cached, so switch back without any download.
            prev = current.previous
            return self.cache.activate(
                entry["task"], prev["version"], prev["digest"], prev["manifest"]
            )
        try:
            manifest_url = urljoin(self.identity.server, entry["manifest_url"])
            response = await self.http.get(manifest_url)
            if response.status_code in _UNAVAILABLE_STATUSES:
                raise ServerUnreachable(f"manifest download answered {response.status_code}")
            if response.status_code != 200:
                raise VerifyError(
                    "download_failed", f"manifest download answered {response.status_code}"
                )
            document = response.json()
            manifest = verify_manifest(document, self.identity.release_key, entry["digest"])
            blob_base = manifest_url.rsplit("/manifests/", 1)[0] + "/blobs/"
            inline = document.get("inline") if isinstance(document.get("inline"), dict) else {}
            for f in manifest["files"]:
                if self.cache.has(f["sha256"]):
                    continue  # cached (e.g. the previous version's files on a rollback)
                if isinstance(inline.get(f["sha256"]), str):
                    # Small files come inside the manifest document; put() checks the hash the
                    # signed manifest names, as for a download.
                    try:
                        data = base64.b64decode(inline[f["sha256"]], validate=True)
                    except binascii.Error:
                        raise VerifyError(
                            "bad_manifest", f"{f['path']}: inlined content is not base64"
                        ) from None
                    self.cache.put(f["sha256"], data)
                    continue
                blob = await self.http.get(blob_base + f["sha256"])
                if blob.status_code in _UNAVAILABLE_STATUSES:
                    raise ServerUnreachable(f"{f['path']}: download answered {blob.status_code}")
                if blob.status_code != 200:
                    raise VerifyError(
                        "download_failed", f"{f['path']}: download answered {blob.status_code}"
                    )
                self.cache.put(f["sha256"], blob.content)
            return self.cache.activate(entry["task"], entry["version"], entry["digest"], manifest)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"{type(exc).__name__}: {exc}") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise VerifyError("download_failed", f"{type(exc).__name__}: {exc}") from None

    async def _run_and_report(self, active: ActiveVersion, deployment: int) -> None:
        self._register_trigger(active.task, active)
        outcome = await self.run_active(active)
        if outcome.ok:
            self.stats.deployed += 1
            self.stats.last_succeeded_at = time.time()
            await self._report(deployment, "succeeded")
        else:
            self.stats.failed += 1
            await self._report(
                deployment,
                "failed",
                error_code="run_failed",
                error=f"{outcome.error_type}: {outcome.message}",
            )

    async def run_active(
        self,
        active: ActiveVersion,
        inputs: dict | None = None,
        window: list | None = None,
        fire_seq: int = -1,
    ) -> RunResult:
        """Run the active version of a task once and report its outcome and uploads."""
        files = self.cache.files(active)
        outcome = await asyncio.to_thread(
            self.runner, active, files, {"inputs": inputs or {}, "window": window}
        )
        self.stats.runs += 1
        self.stats.run_errors += 0 if outcome.ok else 1
        await self._queue(
            protocol.message(
                "run_stats",
                id=uuid.uuid4().hex,
                task=active.task,
                version=active.version,
                runs=1,
                errors=0 if outcome.ok else 1,
                latency_ms_p50=round(outcome.duration_ms, 3),
                latency_ms_p95=round(outcome.duration_ms, 3),
                last_error=outcome.last_error(),
            )
        )
        if self.tunnel is not None and (outcome.uploads or fire_seq >= 0):
            # One result per fire: the key (device, task, version, fire_seq) makes a replayed
            # fire or a resent batch count once at the cloud. A failed run's fire is settled
            # too (its error goes in run_stats), so it is not re-run forever.
            payload = None
            if outcome.uploads:
                payload = outcome.uploads[0] if len(outcome.uploads) == 1 else outcome.uploads
            try:
                if fire_seq >= 0:
                    self.tunnel.complete_fire(active.task, active.version, fire_seq, payload)
                else:
                    self.tunnel.enqueue(active.task, active.version, fire_seq, payload)
            except TunnelError as exc:
                # The VM caps uploads at what a tunnel result carries, so this is a bug or a
                # full outbox: say so, settle the fire without its result, keep running.
                log.error("%s v%s: result not queued: %s", active.task, active.version, exc)
                self.stats.run_errors += 1 if outcome.ok else 0
                if fire_seq >= 0:
                    self.tunnel.complete_fire(active.task, active.version, fire_seq, None)
        elif outcome.uploads:
            items = []
            for payload in outcome.uploads:
                self._upload_seq += 1
                key = hashlib.sha256(
                    f"{self.identity.device_id}|{active.task}|{active.version}|{time.time_ns()}|{self._upload_seq}".encode()
                ).hexdigest()
                items.append(
                    {"key": key, "task": active.task, "version": active.version, "payload": payload}
                )
            for batch in _upload_batches(items):
                await self._queue(protocol.message("upload", id=uuid.uuid4().hex, items=batch))
        self._emit("run", {"task": active.task, "version": active.version, "ok": outcome.ok})
        return outcome

    # data pipeline
    async def simulate_events(self, stop: asyncio.Event, per_second: float, seed: int = 0) -> None:
        """Emit a realistic app-session event stream (DESIGN §9 workload) at `per_second`."""
        from walle_device.stream.workload import iter_events

        if self.stream is None or per_second <= 0:
            return
        for event in iter_events(seed):
            if stop.is_set():
                return
            self.stream.emit(
                event["kind"], event["page"], event.get("event", ""), event.get("args")
            )
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.rng.expovariate(per_second))
            except TimeoutError:
                pass

    def _register_trigger(self, task: str, active: ActiveVersion) -> None:
        if self.stream is None:
            return
        spec = (active.manifest.get("config") or {}).get("trigger")
        try:
            if spec:
                self.stream.register_trigger(task, spec)
            else:
                self.stream.remove_trigger(task)
        except ValueError as exc:  # validated at upload; an old cloud might not have
            self.stats.errors.append(f"trigger of {task} v{active.version}: {exc}")

    def _on_fire(self, task: str, fire_seq: int, window) -> None:
        # Called on the stream's worker thread: record the fire durably (the stream counts it
        # delivered when this returns), then hand the run to the event loop; never block on it.
        data = window.to_dict()
        if self.tunnel is not None:
            self.tunnel.accept_fire(task, fire_seq, data)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._spawn_fire, task, fire_seq, data)

    def _spawn_fire(self, task: str, fire_seq: int, window: dict) -> None:
        active = self.cache.active(task)
        if active is None:
            if self.tunnel is not None:  # the task is gone: nothing will ever run this fire
                self.tunnel.complete_fire(task, 0, fire_seq)
            return
        self._spawn(
            self.run_active(
                active,
                window=window["events"],
                inputs={"aggregates": window["aggregates"]},
                fire_seq=fire_seq,
            )
        )

    async def _tunnel_send(self, items: list[dict]) -> list[str]:
        """The tunnel's transport: one `upload` message, answered by its `upload_ack`."""
        if self._ws is None:
            raise ConnectionError("not connected")
        msg_id = uuid.uuid4().hex
        waiter = asyncio.get_running_loop().create_future()
        self._upload_waiters[msg_id] = waiter
        try:
            await self._ws.send(protocol.encode(protocol.message("upload", id=msg_id, items=items)))
            return await asyncio.wait_for(waiter, timeout=10)
        finally:
            self._upload_waiters.pop(msg_id, None)

    async def _report(
        self,
        deployment: int,
        state: str,
        *,
        error_code: str | None = None,
        error: str | None = None,
    ) -> None:
        if (deployment, state) in self._reported:
            return
        self._reported.add((deployment, state))
        fields: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "deployment": deployment,
            "state": state,
            "at": time.time(),
        }
        if error_code:
            fields["error_code"] = error_code
            fields["error"] = (error or "")[:1000]
        self._emit("report", fields)
        await self._queue(protocol.message("report", **fields))

    async def _queue(self, msg: dict) -> None:
        self._pending[msg["id"]] = msg
        self._save_pending()
        await self._send(msg)

    @property
    def pending(self) -> int:
        return len(self._pending)
