"""New version vs control: does the released version run worse than what the rest of the
target runs, over the same time window?

- *New*: run reports of the release's version from devices of the release's target.
- *Control*: run reports of any other version of the task from the same targeted devices:
  devices not (yet) on the new version, counted by the version each run actually ran, so a
  device contributes to control until it switches and to new after.
- Both over the same window: from the release's start (or the picked `since`) to its end
  (or now, or the picked `until`).

Run errors count in the error rate whatever the deployment's state (a device whose first
run failed reports that run too). Each metric gets a significance test and a verdict in
words (`walle_web/stats.py`). A rollback release compares the restored version (its "new")
with the version being rolled back, and says so in the labels.
"""

from __future__ import annotations

import time
from datetime import datetime

from django.utils import timezone

from devices import health
from devices.targeting import reached_devices
from releases.models import Release
from walle_web import stats
from walle_web.timerange import TimeRange

# The optional gate ("stop if the new version is significantly worse than control") is
# stricter than the dashboard's verdict: it stops a release on its own.
GATE_ALPHA = 0.01
# A latency difference must also be large enough to matter before the gate stops a release.
GATE_LATENCY_RATIO = 1.10


def window(release: Release, rng: TimeRange | None = None) -> tuple[datetime, datetime]:
    start = release.started_at or release.created_at
    end = release.finished_at or timezone.now()
    if rng is not None:
        start, end = max(start, rng.since), min(end, rng.until)
    return start, max(start, end)


def labels(release: Release, control_versions: list[int]) -> dict[str, str]:
    versions = ", ".join(f"v{v}" for v in control_versions) or "the previous version"
    if release.rollback_of_id:
        return {
            "new": f"v{release.version.number} (restored by this rollback)",
            "control": f"{versions} (being rolled back)",
            "question": f"Does v{release.version.number} run better than what it replaces?",
        }
    return {
        "new": f"v{release.version.number} (new)",
        "control": f"{versions} (control)",
        "question": f"Does v{release.version.number} run worse than {versions}?",
    }


def _split(release: Release, start: datetime, end: datetime):
    rows, truncated = health.load(release.app_id, release.task.name, start, end)
    if release.target:  # an empty target is the whole app: every row is in it
        targeted = {d.id for d in reached_devices(release.app_id, release.target)}
        rows = [s for s in rows if s.device_id in targeted]
    number = release.version.number
    new = [s for s in rows if s.version == number]
    control = [s for s in rows if s.version != number]
    return new, control, truncated


def new_vs_control(release: Release, rng: TimeRange | None = None) -> dict:
    """Sample sizes, rates, latency and verdicts of the new version against control."""
    start, end = window(release, rng)
    new, control, truncated = _split(release, start, end)
    groups = {"new": health.summarize(new), "control": health.summarize(control)}
    control_versions = sorted({s.version for s in control})
    error = stats.compare_error_rates(
        groups["new"]["errors"],
        groups["new"]["runs"],
        groups["control"]["errors"],
        groups["control"]["runs"],
    )
    latency = stats.compare_latency(
        [s.p50 for s in new if s.p50 is not None],
        [s.p50 for s in control if s.p50 is not None],
    )
    result = {
        **groups,
        "window": {"since": start.isoformat(), "until": end.isoformat()},
        "version": release.version.number,
        "control_versions": control_versions,
        "labels": labels(release, control_versions),
        "rollback": bool(release.rollback_of_id),
        "verdicts": {"error_rate": error.as_dict(), "latency": latency.as_dict()},
        "truncated": truncated,
    }
    if rng is not None:
        by_group = health.series(
            [*new, *control],
            TimeRange(rng.since, rng.until, rng.step),
            key=lambda s: "new" if s.version == release.version.number else "control",
        )
        empty = [None] * rng.buckets()
        result["series"] = {
            "t": [rng.bucket_start(i) for i in range(rng.buckets())],
            **{
                g: {
                    "error_rate": by_group.get(g, {}).get("error_rate", empty),
                    "latency_ms_p50": by_group.get(g, {}).get("latency_ms_p50", empty),
                    "runs": by_group.get(g, {}).get("runs", [0] * rng.buckets()),
                }
                for g in ("new", "control")
            },
        }
    return result


# The gate reads every run report of the window and, with a target, scans the app's devices:
# each worker judges a release at most once per GATE_EVERY_S (answers are kept per process,
# per release start, so a release is never judged with another one's answer).
GATE_EVERY_S = 10.0
_gate_answers: dict[tuple[int, str], tuple[float, str | None]] = {}


def worse_than_control(release: Release) -> str | None:
    """Why the new version is significantly worse than control (p < GATE_ALPHA), or None."""
    now = time.monotonic()
    key = (release.pk, str(release.started_at))
    if (hit := _gate_answers.get(key)) and now - hit[0] < GATE_EVERY_S:
        return hit[1]
    answer = _judge(release)
    _gate_answers[key] = (now, answer)
    return answer


def _judge(release: Release) -> str | None:
    result = new_vs_control(release)
    new, control = result["new"], result["control"]
    error = stats.compare_error_rates(
        new["errors"], new["runs"], control["errors"], control["runs"], alpha=GATE_ALPHA
    )
    label_new, label_control = result["labels"]["new"], result["labels"]["control"]
    if error.outcome == "worse":
        return (
            f"v{release.version.number} errs significantly more than control: "
            f"{new['error_rate']:.1%} of {new['runs']} runs vs {control['error_rate']:.1%} of "
            f"{control['runs']} ({error.test}, {stats.format_p(error.p_value)}; "
            f"{label_new} vs {label_control})"
        )
    verdict = result["verdicts"]["latency"]
    if (
        verdict["outcome"] == "worse"
        and verdict["p_value"] < GATE_ALPHA
        and new["latency_ms_p50"] >= GATE_LATENCY_RATIO * control["latency_ms_p50"]
    ):
        return (
            f"v{release.version.number} runs significantly slower than control: p50 "
            f"{new['latency_ms_p50']:.1f} ms vs {control['latency_ms_p50']:.1f} ms "
            f"({verdict['test']}, {stats.format_p(verdict['p_value'])})"
        )
    return None
