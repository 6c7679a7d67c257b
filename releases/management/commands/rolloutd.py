"""The rollout worker: evaluates gates, soak times, timeouts and pacing of every live release.

Any number may run at once: each step locks the release row, so they serialize per release.
"""

from __future__ import annotations

import random
import signal
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from releases.events import worker_tick
from releases.models import Release
from releases.services import due_releases, evaluate_release


class Command(BaseCommand):
    help = "Run the rollout worker (every ~2 s with jitter); --once for a single pass."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=2.0)
        parser.add_argument(
            "--once", action="store_true", help="one pass over the due releases, then exit"
        )
        parser.add_argument(
            "--not-before", type=float, default=0.0, help="wait until this Unix time first (tests)"
        )

    def handle(self, *args, **opts):
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        rng = random.Random()
        if opts["not_before"] > time.time():
            time.sleep(opts["not_before"] - time.time())
        while not stopping:
            close_old_connections()
            worker_tick.send(sender=self.__class__)
            for release_id in due_releases():
                outcome = evaluate_release(Release(pk=release_id))
                if outcome not in ("idle", "waiting", "paused", "finishing"):
                    self.stdout.write(f"release {release_id}: {outcome}")
                    self.stdout.flush()
            if opts["once"]:
                return
            # Jitter keeps several workers from ticking in lockstep.
            time.sleep(opts["interval"] * rng.uniform(0.75, 1.25))
