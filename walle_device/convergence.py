"""Deployment convergence: from the server's desired state to the versions active here.

Each `desired` message replaces the list of what this device should run. One sync pass at a
time walks it: a version already active is confirmed, the version before is switched back
to from the cache, anything else is pulled over plain HTTP (the signed manifest, then only
the files this device lacks), verified and activated atomically; then it runs once and every
step is reported against its deployment. A pinned version (no deployment) converges quietly.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import httpx

from walle_device.bundles import ActiveVersion, BundleCache, VerifyError, verify_manifest
from walle_device.enrollment import Identity
from walle_device.protocol import DesiredTask
from walle_device.stats import DeviceStats

if TYPE_CHECKING:
    from walle_device.vm.result import RunResult

log = logging.getLogger("walle_device")

# A download that cannot reach the server (refused, reset, 5xx, 429) is not the content's
# fault: the device keeps trying, with capped exponential backoff and full jitter, for as long
# as the deployment is still wanted, up to this long (a restart, a deploy, a failover), before
# such failures count against the release's `max_retries`.
DOWNLOAD_OUTAGE_S = 600.0
DOWNLOAD_BACKOFF_CAP_S = 15.0
# Answers that say "not now" rather than "no".
_UNAVAILABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class ServerUnreachable(VerifyError):
    """A download that did not reach the server or got a "not now" answer: worth waiting for."""

    def __init__(self, message: str) -> None:
        super().__init__("download_failed", message)


class Converger:
    """Keeps the active versions converging to the latest desired state.

    `report(deployment, state, ...)` sends a deployment report (once per deployment and
    state; `reported` is the set of those already sent); `run(active)` runs a version that
    just became active; `on_settled(session)` is called when a sync pass has applied the
    last desired state, which arrived in connection `session`.
    """

    def __init__(
        self,
        identity: Identity,
        cache: BundleCache,
        http: httpx.AsyncClient,
        rng: random.Random,
        stats: DeviceStats,
        *,
        report: Callable[..., Awaitable[None]],
        reported: set[tuple[int, str]],
        run: Callable[[ActiveVersion], Awaitable[RunResult]],
        on_settled: Callable[[int], None],
    ) -> None:
        self.identity = identity
        self.cache = cache
        self.http = http
        self.rng = rng
        self.stats = stats
        self._report = report
        self._reported = reported
        self._run = run
        self._on_settled = on_settled
        self.desired: list[DesiredTask] = []
        self._desired_session = 0
        self._sync_task: asyncio.Task | None = None
        self._sync_again = False
        # Set when a `desired` arrives: a download waiting out an outage tries again at once.
        self._desired_arrived = asyncio.Event()

    def apply(self, tasks: list[DesiredTask], session: int) -> None:
        """Take a new desired state (from connection `session`) and converge to it."""
        self.desired = tasks
        self._desired_session = session
        self._desired_arrived.set()
        if self._sync_task is not None and not self._sync_task.done():
            self._sync_again = True  # the running pass goes round once more
            return
        self._sync_task = asyncio.ensure_future(self._sync())

    def cancel(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()

    def wanted(self, deployment: int) -> bool:
        """Whether the latest desired state still names this deployment."""
        return any(e.deployment == deployment for e in self.desired)

    async def _sync(self) -> None:
        while True:
            self._sync_again = False
            for entry in list(self.desired):
                try:
                    await self.converge(entry)
                except Exception as exc:  # a bug in one task's deploy must not stop the others
                    log.exception(
                        "device %s: deploying %s failed", self.identity.device_id, entry.task
                    )
                    self.stats.errors.append(f"{type(exc).__name__}: {exc}")
            if not self._sync_again:
                self._on_settled(self._desired_session)
                return

    async def converge(self, entry: DesiredTask) -> None:
        deployment = entry.deployment
        active = self.cache.active(entry.task)
        if active is not None and (active.version, active.digest) == (entry.version, entry.digest):
            if (
                deployment is not None
                and (deployment, "succeeded") not in self._reported
                and (deployment, "failed") not in self._reported
            ):
                # Already running this version (e.g. the same version released again): confirm it.
                await self._installed(active, deployment)
            return
        if deployment is not None and (deployment, "failed") in self._reported:
            return  # this deployment already failed here; a new release or retry brings a new one
        active = self.cache.activate_previous(entry.task, entry.digest)
        if deployment is None:
            # A pinned version: converge quietly, there is no deployment to report on.
            if active is None:
                try:
                    await self.fetch(entry)
                except VerifyError as exc:
                    self.stats.errors.append(f"pinned {entry.task} v{entry.version}: {exc.message}")
            return
        if active is None:
            active = await self._download(entry, deployment)
        if active is not None:
            await self._installed(active, deployment)

    async def _download(self, entry: DesiredTask, deployment: int) -> ActiveVersion | None:
        """Pull with the release's retry policy; None when it failed (reported) or is no longer
        wanted."""
        await self._report(deployment, "downloading")
        if entry.pull_jitter_s:
            await asyncio.sleep(self.rng.uniform(0, entry.pull_jitter_s))
        attempt = 0
        outage_tries = 0
        outage_since: float | None = None
        while True:
            try:
                return await self.fetch(entry)
            except VerifyError as exc:
                if isinstance(exc, ServerUnreachable):
                    if not self.wanted(deployment):
                        return None  # the server no longer asks for it (cancelled, superseded)
                    outage_since = outage_since or time.monotonic()
                    if time.monotonic() - outage_since < DOWNLOAD_OUTAGE_S:
                        cap = max(entry.retry_backoff_s, 0.5) * 2**outage_tries
                        outage_tries += 1
                        await self._wait_for_server(
                            self.rng.uniform(0, min(DOWNLOAD_BACKOFF_CAP_S, cap))
                        )
                        continue
                # Wrong content stays wrong: only a failed download is worth another try.
                if exc.code == "download_failed" and attempt < entry.max_retries:
                    attempt += 1
                    await asyncio.sleep(self.rng.uniform(0, entry.retry_backoff_s * 2**attempt))
                    continue
                self.stats.failed += 1
                await self._report(deployment, "failed", error_code=exc.code, error=exc.message)
                return None

    async def _wait_for_server(self, delay: float) -> None:
        """Sleep `delay`, or less if a `desired` arrives meanwhile (the server is back)."""
        self._desired_arrived.clear()
        try:
            await asyncio.wait_for(self._desired_arrived.wait(), delay)
        except TimeoutError:
            pass

    async def fetch(self, entry: DesiredTask) -> ActiveVersion:
        """Fetch the manifest and the files this device lacks, verify all, activate atomically."""
        try:
            manifest_url = urljoin(self.identity.server, entry.manifest_url)
            response = await self.http.get(manifest_url)
            if response.status_code in _UNAVAILABLE_STATUSES:
                raise ServerUnreachable(f"manifest download answered {response.status_code}")
            if response.status_code != 200:
                raise VerifyError(
                    "download_failed", f"manifest download answered {response.status_code}"
                )
            document = response.json()
            manifest = verify_manifest(document, self.identity.release_key, entry.digest)
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
            return self.cache.activate(entry.task, entry.version, entry.digest, manifest)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"{type(exc).__name__}: {exc}") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise VerifyError("download_failed", f"{type(exc).__name__}: {exc}") from None

    async def _installed(self, active: ActiveVersion, deployment: int) -> None:
        """Report a deployment's version installed, run it once, report how that went."""
        await self._report(deployment, "installed")
        outcome = await self._run(active)
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
