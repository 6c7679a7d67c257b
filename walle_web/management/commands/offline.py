"""Mark every device offline: `make run` does this when it stops (and when it starts, after a
run that was killed), since no server is left to hear the devices say goodbye."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.utils import timezone

from devices.models import Device


class Command(BaseCommand):
    help = "Mark every device offline (for a single embedded server that stopped)."

    def handle(self, *args, **opts):
        n = Device.objects.filter(online=True).update(online=False, last_seen=timezone.now())
        self.stdout.write(f"{n} device{'s' * (n != 1)} still marked online, now offline")
