"""Release policies: stages with gates, delivery controls. Validation and defaults, no I/O."""

from __future__ import annotations

from typing import Any

STAGE_DEFAULTS: dict[str, Any] = {
    "soak_s": 0,  # minimum time in the stage before it may advance
    "success_gate": 0.95,  # share of the stage's devices that must have succeeded to advance
    "error_gate": 0.2,  # share failed or timed out (of those finished) that trips the gate
    "min_finished": 5,  # the error gate is evaluated only once this many have finished
    "auto_advance": True,
    # pause (or roll back, per on_error) when the new version runs significantly worse than
    # the control group (releases/compare.py: error rate, or latency, at p < 0.01)
    "stop_if_worse": False,
}
DELIVERY_DEFAULTS: dict[str, Any] = {
    "notify_rate": 0,  # devices per second; 0 = all at once
    "ramp": 1.0,  # the rate is multiplied by this every minute (exponential ramp); 1 = flat
    "max_in_flight": 0,  # cap on deployments notified but not finished; 0 = no cap
    "timeout_s": 3600,  # a deployment not finished this long after its notice times out
    "max_retries": 3,  # download attempts a device makes before it reports failed
    "retry_backoff_s": 2.0,  # base of the device's exponential backoff between attempts
    "pull_jitter_s": 0.0,  # devices wait up to this long before pulling (spreads a burst)
}
ON_ERROR = ("pause", "rollback")
MAX_RATE = 100_000.0


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def normalize_stages(stages: object) -> tuple[list[dict], list[str]]:
    """Fill defaults into a stage list and return it with every problem found."""
    if not isinstance(stages, list) or not stages:
        return [], ["stages must be a non-empty list of {'basis_points': 1..10000, ...}"]
    errors: list[str] = []
    result: list[dict] = []
    previous = 0
    for i, stage in enumerate(stages, start=1):
        if not isinstance(stage, dict):
            errors.append(f"stage {i}: must be an object")
            continue
        unknown = set(stage) - {"basis_points", "name", *STAGE_DEFAULTS}
        if unknown:
            errors.append(
                f"stage {i}: unknown keys {', '.join(sorted(unknown))}; known: basis_points, name, {', '.join(STAGE_DEFAULTS)}"
            )
        bp = stage.get("basis_points")
        if not isinstance(bp, int) or isinstance(bp, bool):
            errors.append(f"stage {i}: needs an integer 'basis_points' (1..10000; 10000 = 100%)")
            continue
        if not 1 <= bp <= 10_000:
            errors.append(f"stage {i}: basis_points {bp} is outside 1..10000")
        elif bp <= previous:
            errors.append(
                f"stage {i}: basis_points {bp} must be larger than the previous stage's {previous}"
            )
        previous = max(previous, bp)
        full = {**STAGE_DEFAULTS, **stage}
        for key in ("success_gate", "error_gate"):
            if not _number(full[key]) or not 0 <= full[key] <= 1:
                errors.append(f"stage {i}: {key} must be a share between 0 and 1 (e.g. 0.95)")
        for key in ("soak_s", "min_finished"):
            if not isinstance(full[key], int) or isinstance(full[key], bool) or full[key] < 0:
                errors.append(f"stage {i}: {key} must be a whole number >= 0")
        for key in ("auto_advance", "stop_if_worse"):
            if not isinstance(full[key], bool):
                errors.append(f"stage {i}: {key} must be true or false")
        result.append(full)
    if not errors and result[-1]["basis_points"] != 10_000:
        errors.append("the last stage must reach 10000 basis points (100% of the target)")
    return result, errors


def normalize_delivery(delivery: object) -> tuple[dict, list[str]]:
    if delivery is None:
        delivery = {}
    if not isinstance(delivery, dict):
        return dict(DELIVERY_DEFAULTS), ["delivery must be an object"]
    errors = []
    unknown = set(delivery) - set(DELIVERY_DEFAULTS)
    if unknown:
        errors.append(
            f"delivery: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(DELIVERY_DEFAULTS)}"
        )
    full = {**DELIVERY_DEFAULTS, **delivery}
    for key in ("notify_rate", "ramp", "timeout_s", "retry_backoff_s", "pull_jitter_s"):
        if not _number(full[key]) or full[key] < 0:
            errors.append(f"delivery: {key} must be a number >= 0")
    for key in ("max_in_flight", "max_retries"):
        if not isinstance(full[key], int) or isinstance(full[key], bool) or full[key] < 0:
            errors.append(f"delivery: {key} must be a whole number >= 0")
    if _number(full["ramp"]) and full["ramp"] and full["ramp"] < 1:
        errors.append("delivery: ramp must be >= 1 (1 = a flat rate; 2 = doubling every minute)")
    if _number(full["timeout_s"]) and 0 < full["timeout_s"] < 5:
        errors.append("delivery: timeout_s must be at least 5 seconds")
    if isinstance(full["max_retries"], int) and full["max_retries"] > 20:
        errors.append("delivery: max_retries must be at most 20")
    return full, errors


def limited(delivery: dict) -> bool:
    """Does this release pace its notices (so the worker, not the start, rings devices)?"""
    return bool(delivery.get("notify_rate")) or bool(delivery.get("max_in_flight"))


def current_rate(delivery: dict, seconds_running: float) -> float:
    rate = float(delivery.get("notify_rate") or 0)
    ramp = float(delivery.get("ramp") or 1)
    if rate and ramp > 1:
        rate *= ramp ** (seconds_running / 60.0)
    return min(rate, MAX_RATE)
