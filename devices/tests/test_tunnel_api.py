from __future__ import annotations

import json

import pytest

from devices.models import Result

pytestmark = pytest.mark.django_db


def post_batch(client, token, body):
    return client.post(
        "/api/v1/tunnel/",
        json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def test_a_batch_is_stored_once_and_every_key_is_acked(cast, client):
    token = cast.tokens[cast.devices[0].uid]
    items = [
        {"key": f"k{i}", "task": "item-features", "version": 1, "payload": {"n": i}}
        for i in range(3)
    ]
    assert post_batch(client, token, {"items": items}).json() == {"keys": ["k0", "k1", "k2"]}
    assert post_batch(client, token, {"items": [*items[1:], {**items[0], "key": "k3"}]}).json() == {
        "keys": ["k1", "k2", "k3"]
    }
    assert sorted(Result.objects.values_list("key", flat=True)) == ["k0", "k1", "k2", "k3"]


def test_bad_batches_get_a_clear_error(cast, client):
    token = cast.tokens[cast.devices[0].uid]
    assert post_batch(client, "nope.nope", {"items": []}).status_code == 401
    assert client.post("/api/v1/tunnel/", "{}", content_type="application/json").status_code == 401
    bad = post_batch(client, token, {"items": [{"key": "k"}]})
    assert bad.status_code == 400 and "missing field 'task'" in bad.json()["items"][0]
    assert post_batch(client, token, {"nothing": 1}).status_code == 400


def test_results_export_as_jsonl_and_csv_per_app(cast, client):
    token = cast.tokens[cast.devices[0].uid]
    post_batch(
        client,
        token,
        {"items": [{"key": "a", "task": "item-features", "version": 1, "payload": {"viewed": 7}}]},
    )
    api = cast.api("viewer")
    jsonl = api.get("/api/v1/results/export/?app=shop-android&task=item-features")
    lines = [json.loads(line) for line in b"".join(jsonl.streaming_content).decode().splitlines()]
    assert lines == [
        {**lines[0], "key": "a", "payload": {"viewed": 7}, "device": cast.devices[0].uid}
    ]
    csv_body = b"".join(
        api.get(
            "/api/v1/results/export/?app=shop-android&task=item-features&as=csv"
        ).streaming_content
    ).decode()
    assert (
        csv_body.splitlines()[0] == "key,device,task,version,received_at,payload"
        and '"{""viewed"": 7}"' in csv_body
    )
    assert (
        cast.api("outsider")
        .get("/api/v1/results/export/?app=shop-android&task=item-features")
        .status_code
        == 400
    )
