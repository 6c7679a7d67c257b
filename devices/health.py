"""How tasks run across the fleet, from the devices' `run_stats` reports: runs, errors, latency.

A report covers the runs of one task version on one device since the previous report, with
that device's own p50/p95 latency. Fleet percentiles are run-weighted percentiles of the
reports' values (p50 of the reported p50s, p95 of the reported p95s): exact when each report
covers one run (what the device runtime sends today), an estimate when reports aggregate.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime

from devices.models import RunStat
from walle_web.stats import weighted_percentile
from walle_web.timerange import TimeRange

# A monitoring query reads at most this many reports (the newest); it says so when it does.
MAX_ROWS = 200_000


@dataclass(frozen=True, slots=True)
class Stat:
    device_id: int
    version: int
    runs: int
    errors: int
    p50: float | None
    p95: float | None
    at: datetime


def load(app_id: int, task: str, since: datetime, until: datetime) -> tuple[list[Stat], bool]:
    """Reports of `task` in [since, until), newest first, and whether MAX_ROWS cut them."""
    rows = list(
        RunStat.objects.filter(
            device__app_id=app_id, task=task, received_at__gte=since, received_at__lt=until
        )
        .order_by("-received_at")
        .values_list(
            "device_id",
            "version",
            "runs",
            "errors",
            "latency_ms_p50",
            "latency_ms_p95",
            "received_at",
        )[: MAX_ROWS + 1]
    )
    truncated = len(rows) > MAX_ROWS
    return [Stat(*r) for r in rows[:MAX_ROWS]], truncated


def summarize(stats: Iterable[Stat]) -> dict:
    """Sample sizes, error rate and latency percentiles of a group of reports."""
    stats = list(stats)
    runs = sum(s.runs for s in stats)
    errors = sum(s.errors for s in stats)
    p50s = [(s.p50, s.runs or 1) for s in stats if s.p50 is not None]
    p95s = [(s.p95, s.runs or 1) for s in stats if s.p95 is not None]
    return {
        "devices": len({s.device_id for s in stats}),
        "reports": len(stats),
        "runs": runs,
        "errors": errors,
        "error_rate": errors / runs if runs else None,
        "latency_samples": len(p50s),
        "latency_ms_p50": weighted_percentile(p50s, 0.5),
        "latency_ms_p95": weighted_percentile(p95s, 0.95),
    }


def series(
    stats: Iterable[Stat], rng: TimeRange, key: Callable[[Stat], Hashable]
) -> dict[Hashable, dict[str, list]]:
    """Per group (`key`) and time bucket: runs, errors, error rate, p50, p95 (None if empty)."""
    n = rng.buckets()
    grouped: dict[Hashable, list[list[Stat]]] = {}
    for s in stats:
        i = rng.bucket_of(s.at)
        if 0 <= i < n:
            grouped.setdefault(key(s), [[] for _ in range(n)])[i].append(s)
    out: dict[Hashable, dict[str, list]] = {}
    for group, buckets in grouped.items():
        cols: dict[str, list] = {
            "runs": [],
            "errors": [],
            "error_rate": [],
            "latency_ms_p50": [],
            "latency_ms_p95": [],
        }
        for bucket in buckets:
            summary = summarize(bucket)
            for name in cols:
                cols[name].append(summary[name])
        out[group] = cols
    return out
