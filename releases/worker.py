"""The rollout loop: evaluates gates, soak times, timeouts and pacing of every live release.

It runs in one of two places. In the embedded configuration the server process runs it on a
thread of its own (walle_web/serve.py starts it with the server and stops it on shutdown):
the in-process channel layer reaches only that process's sockets, so the notices the loop
publishes must come from there. With Redis it runs as `manage.py rolloutd`, as many as
wanted, or in every server process (WALLE_ROLLOUT_IN_SERVER).

Any number of loops may run at once: each step locks the release row (on SQLite every write
transaction is IMMEDIATE, so the loop's thread queues behind the ingest writer like another
process's connection would), so they serialize per release. Each release is evaluated on its
own: one that fails is marked with its error (on the release and its dashboard) and the loop
goes on with the others, so one bad release never stops every app's rollouts.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from django.db import close_old_connections, connections

from releases.choices import QUIET_STEPS
from releases.events import worker_tick
from releases.models import Release
from releases.rollout import due_releases, evaluate_release, set_worker_error

log = logging.getLogger(__name__)


class RolloutLoop:
    """Passes over the due releases every `interval` seconds (with jitter) until stopped.

    `say` receives one line per step an operator would look for (a stage advanced, a release
    completed, an error).
    """

    def __init__(self, interval: float = 2.0, say: Callable[[str], None] | None = None) -> None:
        self.interval = interval
        self.say = say or (lambda line: log.info("%s", line))
        self.stopping = threading.Event()
        self._failing: set[int] | None = None
        self._rng = random.Random()
        self._thread: threading.Thread | None = None

    def run(self, *, once: bool = False) -> None:
        """Pass over the due releases until `stop()`; with `once`, a single pass."""
        while not self.stopping.is_set():
            self.run_pass(once=once)
            if once:
                return
            # Jitter keeps several loops from ticking in lockstep.
            self.stopping.wait(self.interval * self._rng.uniform(0.75, 1.25))

    def run_pass(self, *, once: bool = False) -> None:
        close_old_connections()
        try:
            worker_tick.send(sender=type(self), once=once)
            if self._failing is None:
                self._failing = set(
                    Release.objects.exclude(worker_error="").values_list("id", flat=True)
                )
            for release_id in due_releases():
                if self.stopping.is_set():
                    return
                self.evaluate(release_id, self._failing)
        except Exception:  # the database is away: say so, keep the loop alive
            log.exception("rollout pass failed; retrying")
            self.say("rollout pass failed (see the log); retrying")

    def evaluate(self, release_id: int, failing: set[int]) -> None:
        """One release's step; its failure is recorded on it and stops nothing else."""
        try:
            outcome = evaluate_release(Release(pk=release_id))
        except Exception as exc:
            log.exception("release %s could not be evaluated", release_id)
            close_old_connections()
            set_worker_error(release_id, f"{type(exc).__name__}: {exc}")
            failing.add(release_id)
            self.say(f"release {release_id}: error {type(exc).__name__}: {exc}")
            return
        if release_id in failing:
            set_worker_error(release_id, "")
            failing.discard(release_id)
        if outcome not in QUIET_STEPS:
            self.say(f"release {release_id}: {outcome}")

    # --- on a thread of the server process -----------------------------------------------

    def start(self) -> None:
        """Run the loop on a thread of this process (the server's), until `stop()`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run_thread, name="rollout-loop", daemon=True)
        self._thread.start()

    def _run_thread(self) -> None:
        try:
            self.run()
        finally:
            connections.close_all()  # this thread's connection; nothing else closes it

    def stop(self, timeout: float = 30.0) -> None:
        """Let the step in progress commit, then end the loop (and its thread, if started)."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the rollout loop did not stop within %.0f s", timeout)
