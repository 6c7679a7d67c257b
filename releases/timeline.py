"""A release's deployments over time, rebuilt from their history: the dashboard's charts.

At each bucket's end, every deployment is in the state of its last transition so far
(created = pending; rung = notified, from `notified_at`; then the device's reports and the
server's timeouts and rollbacks). That gives the counts by state over time and, per stage,
the success share (succeeded of admitted) and the error rate (failed or timed out of
finished). The same definitions as the live counts, so a reload redraws what was seen live.
"""

from __future__ import annotations

from releases.choices import DEPLOYMENT_ORDER, DeploymentState
from releases.models import Deployment, DeploymentEvent, Release
from walle_web.timerange import TimeRange

GROUPS = {
    DeploymentState.PENDING: "pending",
    DeploymentState.NOTIFIED: "in_progress",
    DeploymentState.DOWNLOADING: "in_progress",
    DeploymentState.INSTALLED: "in_progress",
    DeploymentState.SUCCEEDED: "succeeded",
    DeploymentState.FAILED: "failed",
    DeploymentState.TIMED_OUT: "failed",
    DeploymentState.ROLLED_BACK: "rolled_back",
}
SERIES = ("pending", "in_progress", "succeeded", "failed", "rolled_back")
# The history holds every transition, also late ones (a "downloading" after "succeeded");
# the state only moves forward, by the same order record_report follows.
ORDER = DEPLOYMENT_ORDER


def release_timeline(release: Release, rng: TimeRange) -> dict:
    deployments = {
        d_id: (stage, created)
        for d_id, stage, created in Deployment.objects.filter(release=release).values_list(
            "id", "stage", "created_at"
        )
    }
    changes: list[tuple[float, int, str]] = [
        (created.timestamp(), d_id, DeploymentState.PENDING)
        for d_id, (_, created) in deployments.items()
    ]
    changes += [
        (at.timestamp(), d_id, DeploymentState.NOTIFIED)
        for d_id, at in Deployment.objects.filter(
            release=release, notified_at__isnull=False
        ).values_list("id", "notified_at")
    ]
    changes += [
        (at.timestamp(), d_id, state)
        for d_id, state, at in DeploymentEvent.objects.filter(
            deployment__release=release, at__lt=rng.until
        ).values_list("deployment_id", "state", "at")
    ]
    changes.sort(key=lambda c: (c[0], ORDER[c[2]]))
    n_stages = max(1, len(release.stages or []))
    state: dict[int, str] = {}
    counts = dict.fromkeys(SERIES, 0)
    # Per stage: admitted, succeeded, failed, finished (succeeded + failed) right now.
    per_stage = [dict.fromkeys(("admitted", "succeeded", "failed"), 0) for _ in range(n_stages)]
    out_t: list[float] = []
    out = {name: [] for name in SERIES}
    rates = [{"success_rate": [], "error_rate": []} for _ in range(n_stages)]

    def tally(group: str, stage: int, sign: int) -> None:
        counts[group] += sign
        row = per_stage[min(stage, n_stages - 1)]
        if group in ("succeeded", "failed"):
            row[group] += sign

    # A point at the window's start, one per step after it, and one at its end (now).
    since, until = rng.since.timestamp(), rng.until.timestamp()
    edges = [since + k * rng.step for k in range(rng.buckets()) if since + k * rng.step < until]
    edges.append(until)
    i = 0
    for edge in edges:
        while i < len(changes) and changes[i][0] <= edge:
            _, d_id, new = changes[i]
            i += 1
            old = state.get(d_id)
            if old is not None and (old == new or ORDER[new] <= ORDER[old]):
                continue  # a late report of an earlier step: the state does not move back
            stage = deployments[d_id][0]
            if old is None:
                per_stage[min(stage, n_stages - 1)]["admitted"] += 1
            else:
                tally(GROUPS[old], stage, -1)
            state[d_id] = new
            tally(GROUPS[new], stage, +1)
        out_t.append(edge)
        for name in SERIES:
            out[name].append(counts[name])
        for s, row in enumerate(per_stage):
            finished = row["succeeded"] + row["failed"]
            rates[s]["success_rate"].append(
                row["succeeded"] / row["admitted"] if row["admitted"] else None
            )
            rates[s]["error_rate"].append(row["failed"] / finished if finished else None)
    return {
        **rng.as_dict(),
        "t": out_t,
        "states": out,
        "stages": [{"stage": s + 1, **rates[s]} for s in range(n_stages)],
    }
