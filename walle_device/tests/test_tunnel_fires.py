"""A trigger fire is durable from the moment the stream hands it over until its result is
queued: the two happen in one outbox transaction."""

from __future__ import annotations

import sqlite3

from walle_device.tunnel import Tunnel


def test_an_accepted_fire_stays_pending_until_completed(tmp_path):
    tunnel = Tunnel(tmp_path, "dev-1")
    tunnel.accept_fire("views", 41, {"events": [{"page": "item_7"}], "aggregates": {"items": 2}})
    tunnel.accept_fire("views", 41, {"events": []})  # the stream re-delivering the same fire
    tunnel.close()

    reopened = Tunnel(tmp_path, "dev-1")  # as after a crash
    assert reopened.pending_fires() == [
        ("views", 41, {"events": [{"page": "item_7"}], "aggregates": {"items": 2}})
    ]
    key = reopened.complete_fire("views", 3, 41, {"items": 2})
    assert key == reopened.key("views", 3, 41)
    assert reopened.pending_fires() == [] and reopened.pending() == 1
    assert (
        reopened.complete_fire("views", 3, 41, {"items": 2}) is None
    )  # a re-run is not queued twice
    assert reopened.pending() == 1


def test_a_fire_without_a_result_is_settled_without_an_upload(tmp_path):
    tunnel = Tunnel(tmp_path, "dev-1")
    tunnel.accept_fire("views", 7, {"events": []})
    assert tunnel.complete_fire("views", 1, 7) is None
    assert tunnel.pending_fires() == [] and tunnel.pending() == 0


def test_result_and_fire_change_in_one_transaction(tmp_path):
    tunnel = Tunnel(tmp_path, "dev-1")
    tunnel.accept_fire("views", 9, {"events": []})
    # A failing insert (payload over the cap) must leave the fire pending, not half-settled.
    try:
        tunnel.complete_fire("views", 1, 9, "x" * (tunnel.max_item_bytes + 1))
    except ValueError:
        pass
    assert [f[1] for f in tunnel.pending_fires()] == [9] and tunnel.pending() == 0
    db = sqlite3.connect(tunnel.path)
    assert db.execute("SELECT COUNT(*) FROM fires").fetchone() == (1,)
