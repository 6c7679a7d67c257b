"""The data side of a task (results, run health) and the alerts page; every new endpoint
answers a bad filter with a 400 that says what to type."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import AuditEntry
from alerts.models import Alert, Channel, Delivery
from console.tests.helpers import login, url
from devices.models import Result, RunStat
from devices.services import record_run_stats, store_results
from tests.cast import make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def results(cast):
    """Results of v1 and v2 from two devices, received at known times."""
    make_version(cast.task, b"def run(ctx):\n    return 2\n")
    now = timezone.now().replace(microsecond=0)
    plan = []  # (device, version, seconds ago)
    for i in range(12):
        plan.append((cast.devices[i % 2], 1 + i % 2, 30 * i + 5))
    for n, (device, version, ago) in enumerate(plan):
        store_results(
            device,
            [{"key": f"k{n}", "task": cast.task.name, "version": version, "payload": {"n": n}}],
        )
        Result.objects.filter(key=f"k{n}").update(received_at=now - timedelta(seconds=ago))
    return cast, plan, now


def test_results_page_filters_by_version_and_device_and_exports_the_same(results):
    cast, plan, _ = results
    viewer = login(cast.viewer)
    device = cast.devices[0]
    page = viewer.get(
        url("task-results", cast, task_id=cast.task.pk) + f"?version=1&device={device.uid}"
    )
    assert page.status_code == 200
    shown = [int(n) for n in re.findall(r"\{&quot;n&quot;: (\d+)\}", page.content.decode())]
    expected = [n for n, (d, v, _) in enumerate(plan) if d == device and v == 1]
    assert sorted(shown) == sorted(expected) and expected
    api = cast.api("viewer")
    export = api.get(
        f"/api/v1/results/export/?app={cast.app.slug}&task={cast.task.name}&version=1&device={device.uid}&as=csv"
    )
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert sorted(json.loads(r["payload"])["n"] for r in rows) == sorted(expected)
    jsonl = api.get(f"/api/v1/results/export/?app={cast.app.slug}&task={cast.task.name}&version=2")
    lines = [json.loads(line) for line in b"".join(jsonl.streaming_content).splitlines()]
    assert sorted(x["payload"]["n"] for x in lines) == [n for n, p in enumerate(plan) if p[1] == 2]
    assert (
        api.get(f"/api/v1/results/export/?app={cast.app.slug}&task=x&version=two").status_code
        == 400
    )
    assert (
        viewer.get(url("task-results", cast, task_id=cast.task.pk) + "?version=two").status_code
        == 400
    )


def test_result_rate_counts_arrivals_per_bucket(results):
    cast, plan, now = results
    since = now - timedelta(minutes=10)
    body = (
        cast.api("viewer")
        .get(
            f"/api/v1/results/rate/?app={cast.app.slug}&task={cast.task.name}"
            f"&since={since.timestamp():.0f}&until={now.timestamp():.0f}&step=60"
        )
        .json()
    )
    expected = [0] * 11
    for _, _, ago in plan:
        at = now - timedelta(seconds=ago)
        if at >= since:
            expected[int((at - since).total_seconds() // 60)] += 1
    assert body["results"] == expected and body["total"] == len(plan)
    only_v2 = (
        cast.api("viewer")
        .get(f"/api/v1/results/rate/?app={cast.app.slug}&task={cast.task.pk}&since=10m&version=2")
        .json()
    )
    assert only_v2["total"] == sum(1 for p in plan if p[1] == 2)


def weighted_quantile(samples: list[tuple[float, int]], q: float) -> float:
    """Expand each report into `runs` copies and take the smallest value covering q of them."""
    values = sorted(v for v, runs in samples for _ in range(runs))
    return values[max(0, math.ceil(q * len(values)) - 1)]


def test_run_health_reports_runs_errors_and_percentiles_by_version(cast):
    reports = [  # (device index, version, runs, errors, p50, p95)
        (0, 1, 10, 1, 5.0, 9.0),
        (1, 1, 5, 0, 7.0, 12.0),
        (2, 2, 8, 4, 20.0, 40.0),
        (3, 2, 2, 0, 10.0, 11.0),
        (0, 2, 1, 1, 30.0, 30.0),
    ]
    for n, (d, version, runs, errors, p50, p95) in enumerate(reports):
        record_run_stats(
            cast.devices[d],
            {
                "id": f"m{n}",
                "task": cast.task.name,
                "version": version,
                "runs": runs,
                "errors": errors,
                "latency_ms_p50": p50,
                "latency_ms_p95": p95,
            },
        )
    body = (
        cast.api("viewer")
        .get(f"/api/v1/run-health/?app={cast.app.slug}&task={cast.task.name}&since=1h")
        .json()
    )
    for row in body["versions"]:
        mine = [r for r in reports if r[1] == row["version"]]
        runs, errors = sum(r[2] for r in mine), sum(r[3] for r in mine)
        assert (row["runs"], row["errors"]) == (runs, errors)
        assert row["devices"] == len({r[0] for r in mine})
        assert row["error_rate"] == pytest.approx(errors / runs)
        assert row["latency_ms_p50"] == weighted_quantile([(r[4], r[2]) for r in mine], 0.5)
        assert row["latency_ms_p95"] == weighted_quantile([(r[5], r[2]) for r in mine], 0.95)
    assert [r["version"] for r in body["versions"]] == [2, 1]
    assert [s["version"] for s in body["series"]] == [2, 1]
    assert sum(body["series"][1]["runs"]) == 15 and len(body["series"][1]["runs"]) == len(body["t"])
    assert body["total"]["runs"] == sum(r[2] for r in reports)
    page = login(cast.viewer).get(url("task-health", cast, task_id=cast.task.pk))
    assert page.status_code == 200 and b"health-versions" in page.content


@pytest.mark.parametrize(
    "query",
    [
        "",
        "app=shop-android",
        "app=maps-ios&task=item-features",  # not the viewer's app
        "app=shop-android&task=nope",
        "app=shop-android&task=item-features&since=tomorrow",
        "app=shop-android&task=item-features&step=-5",
        "app=shop-android&task=item-features&version=v2",
        "app=shop-android&task=item-features&since=2026-13-45T99:00",
        "app=shop-android&task=item-features&since=1e400",
    ],
)
def test_data_endpoints_answer_bad_filters_with_400(cast, query):
    api = cast.api("viewer")
    for path in ("/api/v1/run-health/", "/api/v1/results/rate/"):
        response = api.get(f"{path}?{query}")
        assert response.status_code == 400, (path, query, response.content[:300])


def test_the_alerts_page_configures_channels_and_rules_and_lists_alerts(cast):
    operator = login(cast.operator)
    created = operator.post(
        url("alerts", cast),
        {
            "what": "channel",
            "name": "ops",
            "kind": "webhook",
            "url": "https://hooks.example.com/x",
            "events": ["release.failed", "task.error_rate"],
        },
    )
    assert created.status_code == 200 and b"whsec_" in created.content  # shown once
    channel = Channel.objects.get(app=cast.app, name="ops")
    assert channel.events == ["release.failed", "task.error_rate"]
    assert b"whsec_" not in operator.get(url("alerts", cast)).content
    bad = operator.post(
        url("alerts", cast), {"what": "channel", "name": "b", "kind": "webhook", "url": "nope"}
    )
    assert bad.status_code == 400 and b"full http(s) URL" in bad.content
    assert (
        operator.post(url("alerts", cast), {"what": "test", "channel": channel.pk}).status_code
        == 302
    )
    alert = Alert.objects.get(event="alert.test")
    assert Delivery.objects.get(alert=alert).channel == channel
    rule = operator.post(
        url("alerts", cast),
        {
            "what": "rule",
            "task": cast.task.pk,
            "threshold": "5",
            "window_min": "10",
            "min_runs": "20",
        },
    )
    assert rule.status_code == 302
    assert cast.task.error_rate_rule.threshold == pytest.approx(0.05)
    listing = login(cast.viewer).get(url("alerts", cast)).content.decode()
    assert "Test alert for channel ops" in listing and "queued" in listing
    assert login(cast.viewer).post(url("alerts", cast), {"what": "channel"}).status_code == 403
    assert AuditEntry.objects.filter(app=cast.app, action="alert.test").count() == 1
    assert RunStat.objects.count() == 0
