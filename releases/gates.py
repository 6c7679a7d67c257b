"""Why a release waits: each stage's conditions in words, from the numbers the rollout uses.

`explain` reads the same counts as `rollout.evaluate_release` (`stage_counts`) and states
the same rules: a stage advances (the last one completes) once its soak time passed, its
success share reached the success gate, auto-advance is on and — for the last stage — no
device of the release is still in flight; the error gate pauses it once `min_finished`
devices of the stage finished (or the whole stage, when it is smaller). A test holds the two
together (`releases/tests/test_gates.py`).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.utils import timezone

from releases.choices import (
    IN_FLIGHT_DEPLOYMENT_STATES,
    ROLLING_OUT_STATES,
    DeploymentState,
    ReleaseState,
)
from releases.models import Deployment, Release
from releases.rollout import stage_counts


def duration(seconds: float) -> str:
    seconds = max(0, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s} s" if s else f"{minutes} min"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m} min" if m else f"{hours} h"


def _condition(name: str, met: bool, text: str, blocking: bool = True, **extra) -> dict:
    return {"name": name, "met": met, "blocking": blocking, "text": text, **extra}


def _stage_extra(release: Release, stage: int) -> dict[str, int]:
    """Why devices of a stage are not finished: waiting offline, in flight."""
    return Deployment.objects.filter(release=release, stage=stage).aggregate(
        pending_offline=Count("id", filter=Q(state=DeploymentState.PENDING, device__online=False)),
        pending=Count("id", filter=Q(state=DeploymentState.PENDING)),
        in_flight=Count(
            "id",
            filter=Q(
                state__in=(
                    DeploymentState.NOTIFIED,
                    DeploymentState.DOWNLOADING,
                    DeploymentState.INSTALLED,
                )
            ),
        ),
    )


def current_stage_conditions(release: Release, now: datetime) -> tuple[list[dict], bool]:
    """The current stage's conditions, and whether the worker advances (or completes) now."""
    index = release.current_stage
    stage = release.stages[index]
    counts = stage_counts(release)
    extra = _stage_extra(release, index)
    total, succeeded = counts["total"], counts["succeeded"]
    finished, failures = counts["finished"], counts["failures"]
    conditions = []

    ends = (release.stage_started_at or now) + timedelta(seconds=stage["soak_s"])
    soaked = now >= ends
    if stage["soak_s"]:
        conditions.append(
            _condition(
                "soak",
                soaked,
                f"soak time {duration(stage['soak_s'])} passed"
                if soaked
                else f"soak time: {duration((ends - now).total_seconds())} left of "
                f"{duration(stage['soak_s'])}",
                ends_at=ends.isoformat(),
            )
        )

    gate = stage["success_gate"]
    share = succeeded / total if total else 1.0
    success_met = share >= gate
    needed = max(0, math.ceil(gate * total - 1e-9) - succeeded)
    if total == 0:
        text = "no device in this stage yet (an empty stage passes its success gate)"
    elif success_met:
        text = f"{succeeded} of {total} succeeded ({share:.0%}), success gate {gate:.0%}: met"
    else:
        reachable = succeeded + extra["pending"] + extra["in_flight"]
        parts = [
            f"{succeeded} of {total} succeeded ({share:.0%}), success gate {gate:.0%}: "
            f"{needed} more must succeed"
        ]
        if extra["in_flight"]:
            parts.append(f"{extra['in_flight']} in flight")
        if extra["pending"]:
            offline = extra["pending_offline"]
            parts.append(
                f"{extra['pending']} not notified yet"
                + (f" ({offline} offline)" if offline else "")
            )
        if failures:
            parts.append(f"{failures} failed or timed out")
        if reachable / total < gate:
            parts.append(
                "the gate cannot be met even if every unfinished device succeeds: "
                "advance by hand, or roll back"
            )
        text = "; ".join(parts)
    conditions.append(
        _condition(
            "success_gate",
            success_met,
            text,
            succeeded=succeeded,
            total=total,
            share=share,
            gate=gate,
            more_needed=needed,
        )
    )

    applies_at = min(max(1, stage["min_finished"]), total)
    error_gate = stage["error_gate"]
    if total == 0:
        text = "error gate: no device finished yet"
    elif finished < applies_at:
        text = (
            f"error gate {error_gate:.0%} applies once {applies_at} finished: "
            f"{finished} of {applies_at} so far"
        )
        if total < stage["min_finished"]:
            text += f" (the stage holds {total}, fewer than min finished {stage['min_finished']})"
    else:
        text = (
            f"{failures} of {finished} finished failed ({failures / finished:.0%}), "
            f"error gate {error_gate:.0%}: "
            + ("tripped" if failures / finished > error_gate else "holding")
        )
    conditions.append(
        _condition(
            "error_gate",
            True,
            text,
            blocking=False,
            finished=finished,
            applies_at=applies_at,
            min_finished=stage["min_finished"],
        )
    )

    if stage.get("stop_if_worse"):
        conditions.append(
            _condition(
                "compare_gate",
                True,
                "stops if the new version runs significantly worse than control (p < 0.01)",
                blocking=False,
            )
        )

    if not stage["auto_advance"]:
        conditions.append(
            _condition(
                "auto_advance",
                False,
                "auto-advance is off: an operator advances this stage",
            )
        )

    last = index >= len(release.stages) - 1
    ready = stage["auto_advance"] and soaked and success_met
    if last:
        in_flight = Deployment.objects.filter(
            release=release, state__in=IN_FLIGHT_DEPLOYMENT_STATES
        ).count()
        conditions.append(
            _condition(
                "in_flight",
                in_flight == 0,
                "no device in flight"
                if in_flight == 0
                else f"{in_flight} device{'s' * (in_flight != 1)} still in flight: the last "
                "stage completes once they finish (a late failure may still trip its error gate)",
                in_flight=in_flight,
            )
        )
        ready = ready and in_flight == 0
    return conditions, ready


def explain(release: Release, now: datetime | None = None) -> dict:
    """Per stage: its status and what it waits for; a one-line summary for the page."""
    now = now or timezone.now()
    stages = release.stages or [{"basis_points": 10_000}]
    out = []
    summary = ""
    ready = False
    for i, _ in enumerate(stages):
        if release.state == ReleaseState.DRAFT:
            status = "upcoming"
        elif i < release.current_stage:
            status = "passed"
        elif i > release.current_stage:
            status = "upcoming"
        else:
            status = "current"
        out.append({"index": i, "status": status, "conditions": [], "waiting_for": []})

    state = release.state
    current = out[min(release.current_stage, len(out) - 1)]
    if state == ReleaseState.DRAFT:
        summary = (
            f"Draft: starts at {release.scheduled_at:%Y-%m-%d %H:%M} UTC"
            if release.scheduled_at
            else "Draft: start it to reach the first stage's devices"
        )
    elif state in ROLLING_OUT_STATES:
        conditions, ready = current_stage_conditions(release, now)
        current["conditions"] = conditions
        current["waiting_for"] = [c["text"] for c in conditions if c["blocking"] and not c["met"]]
        n = release.current_stage + 1
        last = release.current_stage >= len(stages) - 1
        if state == ReleaseState.PAUSED:
            summary = f"Paused: {release.reason or 'by an operator'}. Resume to go on."
        elif ready:
            summary = (
                f"Stage {n} met its gates: the release completes at the worker's next pass"
                if last
                else f"Stage {n} met its gates: it advances at the worker's next pass"
            )
        else:
            summary = f"Stage {n} waits for: " + "; ".join(current["waiting_for"])
    elif state == ReleaseState.COMPLETED:
        summary = "Completed: every stage passed its gates"
        for s in out:
            s["status"] = "passed"
    elif state == ReleaseState.ABORTED:
        summary = f"Aborted: {release.reason}"
    elif state == ReleaseState.ROLLED_BACK:
        summary = f"Rolled back: {release.reason}"
    return {"summary": summary, "ready": ready, "stages": out, "now": now.isoformat()}
