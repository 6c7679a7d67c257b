"""Release policies: stages with gates, delivery controls. Validation and defaults, no I/O.

Every number has a range (BOUNDS tables below), because each ends up in date arithmetic,
rates or counts of the rollout worker: an unbounded timeout overflowed `timedelta` and
stopped the worker for every app. The same tables produce the OpenAPI schema of `stages`
and `delivery` (releases/api/schema.py), so the documented and the enforced bounds agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from walle_device.protocol import DELIVERY_CONTROLS

DAY = 86_400
MAX_STAGES = 20
MAX_STAGE_NAME = 100
MAX_RATE = 100_000.0


@dataclass(frozen=True)
class Num:
    """A policy number: its range, whether it must be whole, and what it means."""

    lo: float
    hi: float
    integer: bool
    help: str

    def problem(self, where: str, value: object) -> str | None:
        """Why `value` is not acceptable, or None."""
        kind = "a whole number" if self.integer else "a number"
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or (self.integer and not isinstance(value, int)):
            return f"{where} must be {kind} between {_fmt(self.lo)} and {_fmt(self.hi)}"
        if not math.isfinite(value) or not self.lo <= value <= self.hi:
            return f"{where} must be between {_fmt(self.lo)} and {_fmt(self.hi)} ({self.help}), got {value!r}"
        return None


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


STAGE_BOUNDS: dict[str, Num] = {
    "soak_s": Num(0, 30 * DAY, True, "minimum seconds in the stage before it may advance"),
    "success_gate": Num(0, 1, False, "share of the stage's devices that must have succeeded"),
    "error_gate": Num(0, 1, False, "share failed or timed out, of those finished, that trips"),
    "min_finished": Num(0, 1_000_000, True, "finished devices before the error gate is judged"),
}
DELIVERY_BOUNDS: dict[str, Num] = {
    "notify_rate": Num(0, MAX_RATE, False, "devices rung per second; 0 = all at once"),
    "ramp": Num(0, 10, False, "the rate is multiplied by this every minute; 0 or 1 = flat"),
    "max_in_flight": Num(0, 10_000_000, True, "deployments notified but not finished; 0 = no cap"),
    "timeout_s": Num(0, 7 * DAY, False, "seconds after the notice before a deployment times out"),
    "max_retries": Num(0, 20, True, "download attempts a device makes before it reports failed"),
    "retry_backoff_s": Num(0, 3600, False, "base of the device's backoff between attempts"),
    "pull_jitter_s": Num(0, DAY, False, "devices wait up to this long before pulling"),
}

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
    # download attempts, backoff base, pull jitter: what a device assumes without them
    **DELIVERY_CONTROLS,
}
ON_ERROR = ("pause", "rollback")


def normalize_stages(stages: object) -> tuple[list[dict], list[str]]:
    """Fill defaults into a stage list and return it with every problem found."""
    if not isinstance(stages, list) or not stages:
        return [], ["stages must be a non-empty list of {'basis_points': 1..10000, ...}"]
    if len(stages) > MAX_STAGES:
        return [], [f"a release has at most {MAX_STAGES} stages, got {len(stages)}"]
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
                f"stage {i}: unknown keys {', '.join(sorted(map(str, unknown)))[:200]}; known: basis_points, name, {', '.join(STAGE_DEFAULTS)}"
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
        for key, num in STAGE_BOUNDS.items():
            if problem := num.problem(f"stage {i}: {key}", full[key]):
                errors.append(problem)
        for key in ("auto_advance", "stop_if_worse"):
            if not isinstance(full[key], bool):
                errors.append(f"stage {i}: {key} must be true or false")
        if "name" in full and (
            not isinstance(full["name"], str) or len(full["name"]) > MAX_STAGE_NAME
        ):
            errors.append(
                f"stage {i}: name must be a string of at most {MAX_STAGE_NAME} characters"
            )
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
            f"delivery: unknown keys {', '.join(sorted(map(str, unknown)))[:200]}; known: {', '.join(DELIVERY_DEFAULTS)}"
        )
    full = {**DELIVERY_DEFAULTS, **delivery}
    for key, num in DELIVERY_BOUNDS.items():
        if problem := num.problem(f"delivery: {key}", full[key]):
            errors.append(problem)
    if not errors:
        if full["ramp"] and full["ramp"] < 1:
            errors.append(
                "delivery: ramp must be 0 or between 1 and 10 (1 = a flat rate; 2 = doubling every minute)"
            )
        if 0 < full["timeout_s"] < 5:
            errors.append("delivery: timeout_s must be at least 5 seconds (0 = the default)")
    return full, errors


def limited(delivery: dict) -> bool:
    """Does this release pace its notices (so the worker, not the start, rings devices)?"""
    return bool(delivery.get("notify_rate")) or bool(delivery.get("max_in_flight"))


def current_rate(delivery: dict, seconds_running: float) -> float:
    """Notices per second now: the rate ramped up exponentially, capped at MAX_RATE.

    Computed in log space: ramp ** minutes overflows a float after a few days of running.
    """
    rate = float(delivery.get("notify_rate") or 0)
    ramp = float(delivery.get("ramp") or 1)
    if rate <= 0:
        return 0.0
    if ramp > 1:
        exponent = math.log(rate) + math.log(ramp) * max(seconds_running, 0.0) / 60.0
        return MAX_RATE if exponent >= math.log(MAX_RATE) else math.exp(exponent)
    return min(rate, MAX_RATE)


def timeout_seconds(delivery: dict) -> float:
    """The per-deployment timeout, within bounds even for a policy stored before they existed."""
    value = delivery.get("timeout_s") or DELIVERY_DEFAULTS["timeout_s"]
    return min(max(float(value), 5.0), DELIVERY_BOUNDS["timeout_s"].hi)


# --- JSON schemas for the OpenAPI document (one source with the checks above) -------------


def _number_schema(num: Num) -> dict:
    return {
        "type": "integer" if num.integer else "number",
        "minimum": num.lo,
        "maximum": num.hi,
        "description": num.help,
    }


def stages_schema() -> dict:
    stage = {
        "type": "object",
        "required": ["basis_points"],
        "additionalProperties": False,
        "properties": {
            "basis_points": {
                "type": "integer",
                "minimum": 1,
                "maximum": 10_000,
                "description": "cumulative share of the target (10000 = 100%); strictly increasing, the last is 10000",
            },
            "name": {"type": "string", "maxLength": MAX_STAGE_NAME},
            "auto_advance": {"type": "boolean"},
            "stop_if_worse": {
                "type": "boolean",
                "description": "pause (or roll back) when the new version is significantly worse than control",
            },
            **{k: _number_schema(n) for k, n in STAGE_BOUNDS.items()},
        },
    }
    return {"type": "array", "minItems": 1, "maxItems": MAX_STAGES, "items": stage}


def delivery_schema() -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {k: _number_schema(n) for k, n in DELIVERY_BOUNDS.items()},
    }
