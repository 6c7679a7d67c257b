"""The rollout worker: evaluates gates, soak times, timeouts and pacing of every live release.

Any number may run at once: each step locks the release row, so they serialize per release.
Each release is evaluated on its own: one that fails is marked with its error (on the
release and its dashboard) and the worker goes on with the others, so one bad release never
stops every app's rollouts.
"""

from __future__ import annotations

import logging
import random
import signal
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from releases.choices import QUIET_STEPS
from releases.events import worker_tick
from releases.models import Release
from releases.rollout import due_releases, evaluate_release, set_worker_error

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the rollout worker (every ~2 s with jitter); --once for a single pass."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=2.0)
        parser.add_argument(
            "--once", action="store_true", help="one pass over the due releases, then exit"
        )

    def handle(self, *args, **opts):
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        rng = random.Random()
        failing: set[int] | None = None
        while not stopping:
            close_old_connections()
            try:
                worker_tick.send(sender=self.__class__, once=opts["once"])
                if failing is None:
                    failing = set(
                        Release.objects.exclude(worker_error="").values_list("id", flat=True)
                    )
                for release_id in due_releases():
                    self.evaluate(release_id, failing)
            except Exception:  # the database is away: say so, keep the worker alive
                log.exception("rollout pass failed; retrying")
                self.stderr.write("rollout pass failed (see the log); retrying")
            if opts["once"]:
                return
            # Jitter keeps several workers from ticking in lockstep.
            time.sleep(opts["interval"] * rng.uniform(0.75, 1.25))

    def evaluate(self, release_id: int, failing: set[int]) -> None:
        """One release's step; its failure is recorded on it and stops nothing else."""
        try:
            outcome = evaluate_release(Release(pk=release_id))
        except Exception as exc:
            log.exception("release %s could not be evaluated", release_id)
            close_old_connections()
            set_worker_error(release_id, f"{type(exc).__name__}: {exc}")
            failing.add(release_id)
            self.stdout.write(f"release {release_id}: error {type(exc).__name__}: {exc}")
            self.stdout.flush()
            return
        if release_id in failing:
            set_worker_error(release_id, "")
            failing.discard(release_id)
        if outcome not in QUIET_STEPS:
            self.stdout.write(f"release {release_id}: {outcome}")
            self.stdout.flush()
