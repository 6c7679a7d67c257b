"""What a device sends is stored exactly, or refused with a reason and never acked."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator

from devices import services
from devices.models import Result, RunStat
from releases.services import create_release, start_release
from tests.cast import client_for, make_device
from walle_device import protocol
from walle_device.protocol import ProtocolError
from walle_web.asgi import application


def item(key: str, **extra) -> dict:
    return {"key": key, "task": "item-features", "version": 1, "payload": {"n": 1}, **extra}


@pytest.mark.django_db
def test_result_keys_are_scoped_to_the_device(cast):
    mine = cast.devices[0]
    stranger, _ = make_device(cast.other_enroll_key)
    # A device of another app uploads first with the same (predictable) key.
    assert services.store_results(stranger, [item("2026-12-04:1")]) == ["2026-12-04:1"]
    assert services.store_results(mine, [item("2026-12-04:1")]) == ["2026-12-04:1"]
    assert Result.objects.filter(key="2026-12-04:1").count() == 2
    assert Result.objects.get(device=mine).app_id == cast.app.pk
    # A retry of the same key by the same device stays single and is acked again.
    assert services.store_results(mine, [item("2026-12-04:1")]) == ["2026-12-04:1"]
    assert Result.objects.filter(device=mine).count() == 1


@pytest.mark.django_db
def test_items_that_cannot_be_stored_are_never_acked(cast):
    device = cast.devices[0]
    items = [
        item("ok"),
        item("negative", version=-1),
        item("nan", payload={"x": float("nan")}),
        item("nul", payload="a\x00b"),
        item("huge", payload=2**64),
        {"key": "no-task", "version": 1, "payload": 1},
    ]
    assert services.store_results(device, items) == ["ok"]
    assert set(Result.objects.filter(device=device).values_list("key", flat=True)) == {"ok"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bad",
    [
        {"latency_ms_p50": float("inf")},
        {"latency_ms_p95": float("nan")},
        {"runs": 2**31},
        {"errors": -1},
        {"version": 2**40},
        {"task": "t" * 101},
        {"id": "i" * 65},
        {"last_error": {"message": "x" * 40_000}},
        {"last_error": {"message": "a\x00b"}},
    ],
)
def test_run_stats_out_of_range_are_refused_and_nothing_is_stored(cast, bad):
    fields = {"id": "s1", "task": "item-features", "version": 1, "runs": 3, "errors": 0}
    msg = protocol.message("run_stats", **(fields | bad))
    with pytest.raises(ProtocolError):
        services.record_run_stats(cast.devices[0], msg)
    assert not RunStat.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_poisoned_run_stat_gets_an_error_frame_and_monitoring_keeps_working(cast):
    release = start_release(create_release(cast.version))
    token = cast.tokens[cast.devices[0].uid]

    async def go():
        comm = WebsocketCommunicator(
            application, "/ws/device/", headers=[(b"authorization", f"Bearer {token}".encode())]
        )
        assert (await comm.connect())[0]
        await comm.send_to(
            text_data='{"type": "run_stats", "v": 1, "id": "s9", "task": "item-features", '
            '"version": 1, "runs": 1, "errors": 0, "latency_ms_p50": 1e999}'
        )
        error = protocol.decode(await comm.receive_from(timeout=10))
        assert (error["type"], error["code"]) == ("error", "malformed")
        frame = json.dumps(protocol.message("upload", id="u7", items=[item("k", version=2**31)]))
        await comm.send_to(text_data=frame)
        error = protocol.decode(await comm.receive_from(timeout=10))
        # Refused with the message's id: the device drops it instead of re-sending forever.
        assert (error["code"], error["ref"]) == ("invalid", "u7")
        assert error["code"] in protocol.FINAL_ERROR_CODES
        await comm.disconnect()

    asyncio.run(go())
    assert not RunStat.objects.exists() and not Result.objects.exists()
    response = client_for(cast.viewer).get(f"/api/v1/releases/{release.pk}/monitoring/")
    assert response.status_code == 200


@pytest.mark.django_db
def test_a_batch_of_run_stats_is_stored_once_per_message_and_each_is_answered(cast):
    from devices.ingest import Item

    a, b = cast.devices[:2]

    def stats(mid: str, **extra) -> dict:
        fields = {"id": mid, "task": "item-features", "version": 1, "runs": 3, "errors": 0}
        return protocol.message("run_stats", **(fields | extra))

    assert services.record_run_stats(a, stats("m0"))  # stored by an earlier batch
    items = [
        Item("run_stats", a, stats("m0")),  # resent: acked, not stored again
        Item("run_stats", a, stats("m1")),
        Item("run_stats", a, stats("m1")),  # the same message twice in one batch
        Item("run_stats", b, stats("m1")),  # another device's id space
        Item("run_stats", b, stats("m2", runs=-1)),  # out of range: refused
    ]
    services.ingest_run_stats(items)
    assert [i.result for i in items[:4]] == [False, True, False, True]
    assert items[4].error is not None and items[4].result is None
    assert sorted(RunStat.objects.values_list("device_id", "message_id")) == sorted(
        [(a.pk, "m0"), (a.pk, "m1"), (b.pk, "m1")]
    )
