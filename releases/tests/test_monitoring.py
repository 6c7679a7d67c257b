"""The release dashboard's numbers: filters, new vs control, why a stage waits, the timeline.
Expected figures are computed here from the fixture's own data, not read back from the code."""

from __future__ import annotations

import math
from datetime import timedelta
from statistics import NormalDist

import pytest
from django.utils import timezone

from devices import targeting
from devices.models import RunStat
from devices.services import record_run_stats
from releases import gates, timeline
from releases.compare import new_vs_control
from releases.models import Deployment, DeploymentEvent, Release
from releases.monitoring import deployment_counts
from releases.reports import record_report
from releases.rollout import evaluate_release
from releases.services import advance_release, create_release, rollback_release, start_release
from tests.cast import make_device, make_version
from walle_web.tests.test_stats import fisher_by_enumeration
from walle_web.timerange import TimeRange

pytestmark = pytest.mark.django_db

MODELS = ["Pixel 8", "Galaxy S24", "iPhone 15", "Moto G84"]


@pytest.fixture
def fleet(cast):
    for i in range(36):
        device, token = make_device(cast.enroll_key, model=MODELS[i % 4])
        cast.devices.append(device)
        cast.tokens[device.uid] = token
    return cast


def walk(dep: Deployment, *states: str, error_code: str = "run_failed") -> None:
    for state in states:
        record_report(
            dep.device,
            dep.pk,
            state,
            error_code=error_code if state == "failed" else "",
            error="boom" if state == "failed" else "",
        )


def run_stat(device, version: int, runs: int, errors: int, p50: float, n: int = 1) -> None:
    for _ in range(n):
        record_run_stats(
            device,
            {
                "id": f"{device.uid}-{version}-{RunStat.objects.count()}",
                "task": "item-features",
                "version": version,
                "runs": runs,
                "errors": errors,
                "latency_ms_p50": p50,
                "latency_ms_p95": p50 * 2,
            },
        )


def _in_half(salt: str, device) -> bool:
    return targeting.bucket(salt, device.uid) < 5000


@pytest.fixture
def v2_half(fleet):
    """v1 on every device; v2 in its first stage (50%), Moto phones failing to run it."""
    r1 = start_release(create_release(fleet.version))
    for dep in Deployment.objects.filter(release=r1).select_related("device"):
        walk(dep, "downloading", "installed", "succeeded")
    assert evaluate_release(r1) == "completed"
    v2 = make_version(fleet.task, b"def run(ctx):\n    return 2\n")
    # Device ids are random: pick a salt whose first half holds a few Moto phones and others.
    salt = next(
        f"s{i}"
        for i in range(10_000)
        if 2 <= sum(_in_half(f"s{i}", d) for d in fleet.devices if d.model == "Moto G84") <= 8
        and sum(_in_half(f"s{i}", d) for d in fleet.devices if d.model != "Moto G84") >= 10
    )
    r2 = start_release(
        create_release(
            v2,
            stages=[
                {"basis_points": 5000, "auto_advance": False, "error_gate": 1.0},
                {"basis_points": 10_000, "error_gate": 1.0},
            ],
            salt=salt,
        )
    )
    for dep in Deployment.objects.filter(release=r2).select_related("device"):
        if dep.device.model == "Moto G84":
            walk(dep, "downloading", "installed", "failed")
        else:
            walk(dep, "downloading", "installed", "succeeded")
    return fleet, v2, r2


def test_the_device_list_filters_by_deployment_state_and_stage_not_release_state(v2_half):
    fleet, _, r2 = v2_half
    api = fleet.api("viewer")
    stage1 = list(Deployment.objects.filter(release=r2).select_related("device"))
    failed = {d.device.uid for d in stage1 if d.device.model == "Moto G84"}
    assert failed  # the fixture has Moto phones in stage 1
    body = api.get(f"/api/v1/releases/{r2.pk}/deployments/?state=failed").json()
    assert body["count"] == len(failed) and {d["device"] for d in body["results"]} == failed
    both = api.get(f"/api/v1/releases/{r2.pk}/deployments/?state=failed,timed_out").json()
    assert both["count"] == len(failed)
    advance_release(r2)
    stage2 = Deployment.objects.filter(release=r2, stage=1).count()
    assert stage2 == len(fleet.devices) - len(stage1)
    assert api.get(f"/api/v1/releases/{r2.pk}/deployments/?stage=2").json()["count"] == stage2
    pending2 = api.get(f"/api/v1/releases/{r2.pk}/deployments/?stage=2&state=pending,notified")
    assert pending2.json()["count"] == stage2
    # The counts the page shows agree with the list for every state.
    counts = deployment_counts(r2)
    for state in ("pending", "notified", "succeeded", "failed"):
        listed = api.get(f"/api/v1/releases/{r2.pk}/deployments/?state={state}&limit=1").json()
        assert listed["count"] == counts[state]
    bad = api.get(f"/api/v1/releases/{r2.pk}/deployments/?state=exploded")
    assert bad.status_code == 400 and "unknown deployment state exploded" in bad.json()["state"][0]
    assert api.get(f"/api/v1/releases/{r2.pk}/deployments/?stage=first").status_code == 400
    assert api.get(f"/api/v1/releases/{r2.pk}/deployments/?stage=0").status_code == 400
    # The release list still filters releases by their state.
    listed = api.get("/api/v1/releases/?state=completed").json()["results"]
    assert [r["id"] for r in listed] == [
        r.pk for r in Release.objects.filter(state="completed").order_by("-created_at")
    ]


def test_new_vs_control_counts_run_errors_of_failed_devices_over_one_window(v2_half):
    fleet, _, r2 = v2_half
    on_v2 = [d.device for d in Deployment.objects.filter(release=r2).select_related("device")]
    others = [d for d in fleet.devices if d not in on_v2]
    # Every v2 device ran it 3 times (Moto: all errors); control devices ran v1 3 times each.
    for device in on_v2:
        run_stat(device, 2, 1, 1 if device.model == "Moto G84" else 0, 8.0, n=3)
    for device in others:
        run_stat(device, 1, 1, 0, 5.0, n=3)
    # Outside the window or the target: not counted.
    stale = others[0]
    run_stat(stale, 1, 1, 1, 5.0)
    RunStat.objects.filter(device=stale, errors=1).update(
        received_at=r2.started_at - timedelta(minutes=5)
    )
    outsider, _ = make_device(fleet.other_enroll_key)
    run_stat(outsider, 2, 1, 1, 5.0)

    result = new_vs_control(Release.objects.get(pk=r2.pk))
    new_runs, new_errors = 3 * len(on_v2), 3 * sum(d.model == "Moto G84" for d in on_v2)
    control_runs = 3 * len(others)
    assert result["new"]["runs"] == new_runs and result["new"]["errors"] == new_errors
    assert result["new"]["devices"] == len(on_v2)
    assert result["control"]["runs"] == control_runs and result["control"]["errors"] == 0
    assert result["control"]["devices"] == len(others)
    assert result["new"]["error_rate"] == pytest.approx(new_errors / new_runs)
    assert result["control_versions"] == [1]
    verdict = result["verdicts"]["error_rate"]
    pooled = new_errors / (new_runs + control_runs)
    if min(new_runs, control_runs) * pooled >= 5:  # the normal approximation holds
        z = (new_errors / new_runs) / math.sqrt(
            pooled * (1 - pooled) * (1 / new_runs + 1 / control_runs)
        )
        expected = 2 * (1 - NormalDist().cdf(z))
    else:
        expected = fisher_by_enumeration(new_errors, new_runs, 0, control_runs)
    assert verdict["outcome"] == "worse"
    assert verdict["p_value"] == pytest.approx(expected, rel=1e-6)
    latency = result["verdicts"]["latency"]
    assert latency["outcome"] == "worse"  # 8 ms against 5 ms, every sample
    assert result["new"]["latency_ms_p50"] == 8.0 and result["control"]["latency_ms_p50"] == 5.0
    assert result["labels"]["new"] == "v2 (new)" and result["labels"]["control"] == "v1 (control)"


def test_little_data_says_so_instead_of_a_number(v2_half):
    fleet, _, r2 = v2_half
    run_stat(fleet.devices[0], 2, 1, 1, 5.0)
    verdicts = new_vs_control(r2)["verdicts"]
    assert verdicts["error_rate"]["outcome"] == "not_enough_data"
    assert verdicts["error_rate"]["text"].startswith("not enough data yet")


def test_a_rollback_release_is_labelled_from_the_users_side(v2_half):
    _, _, r2 = v2_half
    rb = rollback_release(r2, reason="Moto phones fail")
    labels = new_vs_control(rb)["labels"]
    assert labels["new"] == "v1 (restored by this rollback)"
    assert labels["control"].endswith("(being rolled back)")


def test_the_optional_gate_stops_a_release_significantly_worse_than_control(v2_half, monkeypatch):
    monkeypatch.setattr("releases.compare.GATE_EVERY_S", 0)  # judge at every pass
    fleet, _, r2 = v2_half
    Release.objects.filter(pk=r2.pk).update(
        stages=[{**s, "stop_if_worse": True} for s in r2.stages]
    )
    on_v2 = [d.device for d in Deployment.objects.filter(release=r2).select_related("device")]
    others = [d for d in fleet.devices if d not in on_v2]
    for device in others:
        run_stat(device, 1, 1, 0, 5.0, n=2)
    for device in on_v2:
        run_stat(device, 2, 1, 0, 5.0, n=2)
    assert evaluate_release(r2) == "waiting"  # no difference: it goes on waiting
    for device in on_v2:
        run_stat(device, 2, 1, 1, 5.0, n=3)
    assert evaluate_release(r2) == "paused"
    r2.refresh_from_db()
    assert "errs significantly more than control" in r2.reason and "p < 0.001" in r2.reason


def set_stage(release, **changes):
    stages = [dict(s) for s in release.stages]
    stages[release.current_stage].update(changes)
    Release.objects.filter(pk=release.pk).update(stages=stages)
    release.refresh_from_db()


@pytest.mark.parametrize(
    ("soak_s", "auto", "succeed", "expect"),
    [
        (600, True, "all", "waiting"),  # soak not over
        (0, False, "all", "waiting"),  # an operator advances
        (0, True, "all_but_two", "waiting"),  # success gate not met
        (0, True, "all", "advanced"),
    ],
)
def test_why_waiting_agrees_with_what_the_worker_does(fleet, soak_s, auto, succeed, expect):
    release = start_release(
        create_release(
            fleet.version,
            stages=[
                {"basis_points": 5000, "success_gate": 0.95, "min_finished": 5},
                {"basis_points": 10_000},
            ],
        )
    )
    set_stage(release, soak_s=soak_s, auto_advance=auto)
    deps = list(Deployment.objects.filter(release=release).select_related("device"))
    done = deps if succeed == "all" else deps[:-2]
    for dep in done:
        walk(dep, "downloading", "installed", "succeeded")
    explained = gates.explain(release, now=release.stage_started_at + timedelta(seconds=90))
    stage = explained["stages"][0]
    assert explained["ready"] == (expect == "advanced")
    assert evaluate_release(release) == expect
    texts = " | ".join(c["text"] for c in stage["conditions"])
    if soak_s:
        assert "soak time: 8 min 30 s left of 10 min" in texts
    if not auto:
        assert "auto-advance is off" in explained["summary"]
    if succeed != "all":
        # e.g. "18 of 20 succeeded (90%), success gate 95%: 1 more must succeed"
        total, ok = len(deps), len(done)
        more = math.ceil(0.95 * total) - ok
        assert (
            f"{ok} of {total} succeeded ({ok / total:.0%}), success gate 95%: {more} more"
            in (explained["summary"])
        )
        # The fixture's devices never connected: the two left are waiting offline.
        assert "2 not notified yet (2 offline)" in explained["summary"]


def test_the_last_stage_says_it_waits_for_devices_in_flight(fleet):
    release = start_release(
        create_release(fleet.version, stages=[{"basis_points": 10_000, "success_gate": 0.5}])
    )
    deps = list(Deployment.objects.filter(release=release).select_related("device"))
    for dep in deps[: len(deps) - 3]:
        walk(dep, "downloading", "installed", "succeeded")
    for dep in deps[len(deps) - 3 :]:
        walk(dep, "downloading")
    explained = gates.explain(release)
    assert not explained["ready"]
    assert "3 devices still in flight" in explained["summary"]
    assert evaluate_release(release) == "finishing"


def test_a_stage_smaller_than_min_finished_says_when_its_error_gate_applies(fleet):
    # A salt that puts a device or two (not five) in the 1% stage.
    salt = next(
        f"s{i}"
        for i in range(10_000)
        if 0 < sum(targeting.bucket(f"s{i}", d.uid) < 100 for d in fleet.devices) < 5
    )
    release = start_release(
        create_release(
            fleet.version,
            stages=[{"basis_points": 100, "min_finished": 5}, {"basis_points": 10_000}],
            salt=salt,
        )
    )
    total = Deployment.objects.filter(release=release).count()
    assert 0 < total < 5
    error_gate = next(
        c for c in gates.explain(release)["stages"][0]["conditions"] if c["name"] == "error_gate"
    )
    assert error_gate["applies_at"] == total
    assert "fewer than min finished 5" in error_gate["text"]


def test_the_timeline_replays_the_history_at_each_step(fleet):
    release = start_release(
        create_release(
            fleet.version,
            stages=[{"basis_points": 5000, "auto_advance": False}, {"basis_points": 10_000}],
        )
    )
    t0 = release.started_at
    deps = list(Deployment.objects.filter(release=release).select_related("device"))
    ok, bad = deps[:-2], deps[-2:]
    for dep in ok:
        walk(dep, "downloading", "installed", "succeeded")
    for dep in bad:
        walk(dep, "downloading", "installed", "failed")
    # Pin the history to known times: everything rung at t0, successes at +20 s, failures
    # at +40 s (and a late duplicate "downloading" after success that must not count).
    Deployment.objects.filter(release=release).update(created_at=t0, notified_at=t0)
    DeploymentEvent.objects.filter(deployment__in=deps).update(at=t0 + timedelta(seconds=5))
    DeploymentEvent.objects.filter(deployment__in=ok, state="succeeded").update(
        at=t0 + timedelta(seconds=20)
    )
    DeploymentEvent.objects.filter(deployment__in=bad, state="failed").update(
        at=t0 + timedelta(seconds=40)
    )
    series = timeline.release_timeline(release, TimeRange(t0, t0 + timedelta(seconds=60), step=10))
    assert series["t"] == [t0.timestamp() + 10 * k for k in range(7)]
    n = len(deps)
    assert series["states"]["in_progress"] == [n, n, len(bad), len(bad), 0, 0, 0]
    assert series["states"]["succeeded"] == [0, 0, len(ok), len(ok), len(ok), len(ok), len(ok)]
    assert series["states"]["failed"] == [0, 0, 0, 0, len(bad), len(bad), len(bad)]
    rates = series["stages"][0]
    assert rates["success_rate"][3] == pytest.approx(len(ok) / n)
    assert rates["error_rate"][3] == 0 and rates["error_rate"][4] == pytest.approx(len(bad) / n)
    assert series["stages"][1]["success_rate"] == [None] * 7  # nobody admitted yet
    assert timezone.now() > t0


def test_timeline_and_compare_refuse_bad_windows_with_a_hint(v2_half):
    fleet, _, r2 = v2_half
    api = fleet.api("viewer")
    for query in ("since=yesterday", "until=12:00", "step=0", "step=fast", "since=999999d"):
        for endpoint in ("timeline", "compare"):
            response = api.get(f"/api/v1/releases/{r2.pk}/{endpoint}/?{query}")
            assert response.status_code == 400, (endpoint, query, response.content[:200])
    ok = api.get(f"/api/v1/releases/{r2.pk}/timeline/?since=15m&step=30").json()
    assert ok["step"] == 30 and ok["t"][-1] - ok["t"][0] == pytest.approx(900, abs=2)
    body = api.get(f"/api/v1/releases/{r2.pk}/compare/?since=1h").json()
    assert len(body["series"]["t"]) == len(body["series"]["new"]["error_rate"])
