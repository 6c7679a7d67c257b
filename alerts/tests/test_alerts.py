"""Alerts: channels configured through the API, release outcomes and task error rates raise
alerts in the same transaction, the outbox delivers them (signed webhooks, email) with retries
and backoff, survives a crashed sender, and every alert is in the audit log."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import AuditEntry
from alerts import services
from alerts.choices import DeliveryState
from alerts.models import Alert, Channel, Delivery, ErrorRateRule
from alerts.tests.receiver import Receiver, verify
from devices.services import record_run_stats
from releases.models import Deployment
from releases.reports import record_report
from releases.rollout import evaluate_release
from releases.services import abort_release, create_release, start_release

pytestmark = pytest.mark.django_db


def webhook(cast, url: str, events: list[str] | None = None) -> tuple[int, str]:
    created = cast.api("operator").post(
        "/api/v1/alert-channels/",
        {
            "app_slug": cast.app.slug,
            "name": "ops hook",
            "kind": "webhook",
            "url": url,
            "events": events or [],
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    return created.json()["id"], created.json()["secret"]


def fail_all(release) -> None:
    for dep in Deployment.objects.filter(release=release).select_related("device"):
        record_report(dep.device, dep.pk, "downloading")
        record_report(dep.device, dep.pk, "failed", error_code="run_failed", error="boom")


def test_operators_configure_channels_viewers_read_them_without_secrets(cast):
    channel_id, secret = webhook(cast, "https://hooks.example.com/walle")
    assert secret.startswith("whsec_")
    listed = cast.api("viewer").get(f"/api/v1/alert-channels/?app={cast.app.slug}").json()
    assert [c["id"] for c in listed["results"]] == [channel_id]
    assert "secret" not in listed["results"][0] and listed["results"][0]["has_secret"]
    assert cast.api("outsider").get("/api/v1/alert-channels/").json()["results"] == []
    refused = cast.api("viewer").post(
        "/api/v1/alert-channels/",
        {"app_slug": cast.app.slug, "name": "x", "kind": "email", "emails": ["a@b.c"]},
        format="json",
    )
    assert refused.status_code == 403
    for bad, field in (
        ({"kind": "webhook", "url": "ftp://x"}, "url"),
        ({"kind": "email", "emails": ["not-an-address"]}, "emails"),
        ({"kind": "email", "emails": ["a@b.c"], "events": ["release.exploded"]}, "events"),
        ({"kind": "pager"}, "kind"),
    ):
        response = cast.api("operator").post(
            "/api/v1/alert-channels/",
            {"app_slug": cast.app.slug, "name": "bad", **bad},
            format="json",
        )
        assert response.status_code == 400 and field in response.json(), (bad, response.content)
    rotated = cast.api("operator").post(f"/api/v1/alert-channels/{channel_id}/rotate-secret/")
    assert rotated.json()["secret"] != secret
    assert AuditEntry.objects.filter(app=cast.app, action="alert_channel.create").exists()


def test_a_gate_pause_alerts_through_a_signed_webhook_and_the_audit_log(cast):
    with Receiver() as receiver:
        _, secret = webhook(cast, receiver.url, events=["release.paused_by_gate"])
        release = start_release(
            create_release(cast.version, stages=[{"basis_points": 10_000, "min_finished": 2}])
        )
        fail_all(release)
        release.refresh_from_db()
        assert release.state == "paused"
        alert = Alert.objects.get(event="release.paused_by_gate")
        assert alert.release_id == release.pk and "error gate of stage 1 tripped" in alert.text
        assert AuditEntry.objects.filter(
            action="alert.release.paused_by_gate", target_id=str(alert.pk)
        ).exists()
        assert services.deliver_due()["delivered"] == 1
        (request,) = receiver.wait_for(1)
    assert verify(secret, request["headers"], request["body"])
    assert not verify(secret + "x", request["headers"], request["body"])
    body = json.loads(request["body"])
    assert body["event"] == "release.paused_by_gate" and body["release"]["id"] == release.pk
    assert body["id"] == alert.pk
    assert request["headers"]["X-Walle-Delivery"] == str(alert.deliveries.get().pk)
    assert Delivery.objects.get().state == DeliveryState.DELIVERED


def test_a_failing_receiver_is_retried_with_backoff_then_given_up(cast, monkeypatch):
    with Receiver() as receiver:
        webhook(cast, receiver.url)
        receiver.answers = [500, 503]
        alert = services.raise_alert(cast.app, "alert.test", "hello")
        now = timezone.now()
        rng = random.Random(1)
        assert services.deliver_due(now=now, rng=rng) == {
            "delivered": 0,
            "retrying": 1,
            "failed": 0,
        }
        delivery = Delivery.objects.get(alert=alert)
        wait = (delivery.next_attempt_at - now).total_seconds()
        assert services.BACKOFF_BASE_S * 0.5 <= wait <= services.BACKOFF_BASE_S + 1
        assert "answered 500" in delivery.last_error
        assert services.deliver_due(now=now + timedelta(seconds=1)) == {
            "delivered": 0,
            "retrying": 0,
            "failed": 0,
        }  # not due yet
        later = delivery.next_attempt_at + timedelta(seconds=1)
        assert services.deliver_due(now=later, rng=rng)["retrying"] == 1
        delivery.refresh_from_db()
        second_wait = (delivery.next_attempt_at - later).total_seconds()
        assert services.BACKOFF_BASE_S <= second_wait <= 2 * services.BACKOFF_BASE_S + 1
        assert services.deliver_due(now=delivery.next_attempt_at)["delivered"] == 1
        assert len(receiver.wait_for(3)) == 3
        # Bodies are the same on every attempt: a receiver can deduplicate.
        assert len({r["body"] for r in receiver.requests}) == 1
    # A receiver that never answers well: given up after MAX_ATTEMPTS, and audited.
    monkeypatch.setattr(services, "MAX_ATTEMPTS", 2)
    Channel.objects.update(url="http://127.0.0.1:9/nothing-listens")
    gone = services.raise_alert(cast.app, "alert.test", "again")
    services.deliver_due(now=timezone.now())
    services.deliver_due(now=timezone.now() + timedelta(hours=2))
    assert Delivery.objects.get(alert=gone).state == DeliveryState.FAILED
    assert AuditEntry.objects.filter(
        action="alert.delivery_failed", target_id=str(gone.pk)
    ).exists()


def test_a_sender_that_crashed_mid_delivery_is_taken_over_after_its_lease(cast):
    with Receiver() as receiver:
        webhook(cast, receiver.url)
        alert = services.raise_alert(cast.app, "alert.test", "durable")
        delivery = Delivery.objects.get(alert=alert)
        now = timezone.now()
        assert services._claim(delivery.pk, now)  # a worker took it, then died
        assert services.deliver_due(now=now)["delivered"] == 0  # still leased
        after = now + timedelta(seconds=services.LEASE_S + 1)
        assert services.deliver_due(now=after)["delivered"] == 1
        receiver.wait_for(1)


def test_email_channels_go_through_djangos_email_backend(cast):
    cast.api("operator").post(
        "/api/v1/alert-channels/",
        {
            "app_slug": cast.app.slug,
            "name": "team",
            "kind": "email",
            "emails": ["team@example.com"],
        },
        format="json",
    )
    release = start_release(create_release(cast.version))
    abort_release(release, reason="wrong target", by=cast.operator)
    assert services.deliver_due()["delivered"] == 1
    (message,) = mail.outbox
    assert message.to == ["team@example.com"]
    assert f"release #{release.pk}" in message.subject and "aborted by otto" in message.subject
    assert "wrong target" in message.body and f"/releases/{release.pk}/" in message.body


def test_completion_and_timeouts_alert_too(cast):
    with Receiver() as receiver:
        webhook(cast, receiver.url, events=["release.completed", "release.timed_out"])
        release = start_release(
            create_release(
                cast.version,
                delivery={"timeout_s": 5},
                stages=[{"basis_points": 10_000, "error_gate": 1.0, "success_gate": 0.5}],
            )
        )
        deps = list(Deployment.objects.filter(release=release).select_related("device"))
        for dep in deps[:-1]:
            for state in ("downloading", "installed", "succeeded"):
                record_report(dep.device, dep.pk, state)
        record_report(deps[-1].device, deps[-1].pk, "downloading")
        Deployment.objects.filter(pk=deps[-1].pk).update(
            notified_at=timezone.now() - timedelta(seconds=10)
        )
        assert evaluate_release(release) == "completed"
        events = list(Alert.objects.order_by("id").values_list("event", flat=True))
        assert events == ["release.timed_out", "release.completed"]
        assert "1 device timed out" in Alert.objects.get(event="release.timed_out").subject
        services.deliver_due()
        bodies = [json.loads(r["body"]) for r in receiver.wait_for(2)]
    assert [b["event"] for b in bodies] == events


def test_a_task_error_rate_above_its_threshold_alerts_once_and_once_more_when_back(cast):
    services.save_rule(cast.app, task=cast.task, threshold=0.1, window_s=600, min_runs=10)
    device = cast.devices[0]

    def runs(n: int, errors: int) -> None:
        for i in range(n):
            record_run_stats(
                device,
                {
                    "id": f"{device.uid}-{ErrorRateRule.objects.get().last_runs}-{i}-{errors}-{timezone.now().timestamp()}",
                    "task": cast.task.name,
                    "version": 1,
                    "runs": 1,
                    "errors": 1 if i < errors else 0,
                },
            )

    runs(9, 5)
    assert services.check_error_rates(force=True) == 0  # 9 runs: below min_runs
    runs(11, 0)  # 5 of 20 = 25%
    assert services.check_error_rates(force=True) == 1
    alert = Alert.objects.get(event="task.error_rate")
    assert "25.0% of runs failed" in alert.subject and alert.task == cast.task
    assert services.check_error_rates(force=True) == 0  # still firing: no second alert
    runs(40, 0)  # 5 of 60 = 8.3%
    assert services.check_error_rates(force=True) == 1
    assert Alert.objects.filter(event="task.error_rate_recovered").count() == 1
    assert AuditEntry.objects.filter(action="alert.task.error_rate").count() == 1
    api = cast.api("operator")
    rule = api.get(f"/api/v1/alert-rules/?app={cast.app.slug}").json()["results"][0]
    assert rule["task"] == cast.task.name and rule["firing"] is False
    bad = api.post(
        "/api/v1/alert-rules/",
        {"app_slug": cast.app.slug, "task": "no-such-task", "threshold": 0.1},
        format="json",
    )
    assert bad.status_code == 400 and "no task" in bad.json()["task"][0]
    bad = api.post(
        "/api/v1/alert-rules/",
        {"app_slug": cast.app.slug, "task": cast.task.name, "threshold": 5},
        format="json",
    )
    assert bad.status_code == 400 and "threshold" in bad.json()


def test_an_outcome_announced_twice_alerts_once(cast):
    release = start_release(create_release(cast.version))
    first = services.raise_alert(cast.app, "release.completed", "x", release=release, dedup_key="k")
    again = services.raise_alert(cast.app, "release.completed", "x", release=release, dedup_key="k")
    assert first is not None and again is None


def test_a_failing_alert_never_undoes_the_release_transition(cast, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("alert storage is broken")

    monkeypatch.setattr("alerts.receivers.raise_alert", broken)
    release = start_release(
        create_release(cast.version, stages=[{"basis_points": 10_000, "min_finished": 2}])
    )
    fail_all(release)
    release.refresh_from_db()
    assert release.state == "paused" and Alert.objects.count() == 0
