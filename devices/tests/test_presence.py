"""Presence from sockets: what the ingest writer's connect/disconnect steps store."""

from __future__ import annotations

from types import SimpleNamespace

from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.models import Device
from devices.services import record_presence


def sockets(devices):
    return [SimpleNamespace(device=d) for d in devices]


def test_sockets_of_one_batch_go_offline_in_one_statement(cast):
    devices = cast.devices[:3]
    opened = sockets(devices)
    record_presence(opened, [])
    assert all(Device.objects.get(pk=d.pk).online for d in devices)
    with CaptureQueriesContext(connection) as queries:
        record_presence([], opened)
    assert len(queries) == 1  # a reconnect storm closes thousands at once
    assert not any(Device.objects.get(pk=d.pk).online for d in devices)


def test_an_old_socket_closing_does_not_hide_the_new_one(cast):
    device, other = cast.devices[:2]
    old = sockets([device, other])
    record_presence(old, [])
    new = sockets([device])  # the device reconnected (another process, after a drop)
    record_presence(new, [])
    record_presence([], old)  # then the server noticed the old socket was gone
    assert Device.objects.get(pk=device.pk).online
    assert not Device.objects.get(pk=other.pk).online
    record_presence([], new)
    assert not Device.objects.get(pk=device.pk).online


def test_a_socket_that_never_stored_presence_changes_nothing(cast):
    device = cast.devices[0]
    record_presence(sockets([device]), [])
    record_presence([], sockets([device]))  # no stamp: its connect step never ran
    assert Device.objects.get(pk=device.pk).online
