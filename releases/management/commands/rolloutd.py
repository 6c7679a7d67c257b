"""The rollout worker as its own process (releases/worker.py has the loop and its rules).

With Redis, run one or more beside the server processes. In the embedded configuration the
server process runs the loop itself; `rolloutd --once` still does a single pass from a shell.
"""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from devices.publish import reaches_sockets
from releases.worker import RolloutLoop


class Command(BaseCommand):
    help = "Run the rollout worker (every ~2 s with jitter); --once for a single pass."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=2.0)
        parser.add_argument(
            "--once", action="store_true", help="one pass over the due releases, then exit"
        )

    def handle(self, *args, **opts):
        if not reaches_sockets() and not opts["once"]:
            # Harmless (the loops serialize per release) but rings nobody from here.
            self.stderr.write(
                "no REDIS_URL: the server process runs the rollout loop itself "
                "(WALLE_ROLLOUT_IN_SERVER); this worker's notices reach no device, so it "
                "leaves devices pending for the server to ring"
            )
        loop = RolloutLoop(opts["interval"], say=self.say)
        signal.signal(signal.SIGTERM, lambda *_: loop.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: loop.stopping.set())
        loop.run(once=opts["once"])

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
