"""The time window of a monitoring query: `?since=&until=&step=` as users and pages type them.

`since`/`until` take an ISO 8601 time, Unix seconds, or a duration back from now (`15m`,
`1h`, `6h`, `7d`); `step` takes seconds or a duration. A bad value is a `RangeError` whose
message says what to type, so every endpoint answers 400 instead of 500.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from walle_web.params import ParamError

# Steps a chart can use: the first one giving at most MAX_POINTS buckets over the window.
STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
MAX_POINTS = 120
MAX_SPAN = timedelta(days=90)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class RangeError(ParamError):
    """A `since`, `until` or `step` that cannot be read; `param` names it."""


@dataclass(frozen=True)
class TimeRange:
    since: datetime
    until: datetime
    step: int  # seconds per bucket

    def buckets(self) -> int:
        return max(1, int((self.until - self.since).total_seconds() // self.step) + 1)

    def bucket_of(self, at: datetime) -> int:
        return int((at - self.since).total_seconds() // self.step)

    def bucket_start(self, index: int) -> float:
        return self.since.timestamp() + index * self.step

    def as_dict(self) -> dict:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "step": self.step}


def duration_seconds(text: str) -> float | None:
    match = _DURATION.match(text.strip().lower())
    if not match:
        return None
    return float(match.group(1)) * _UNIT[match.group(2)]


def parse_time(param: str, text: str, now: datetime) -> datetime:
    text = text.strip()
    parsed: datetime | None = None
    try:
        if re.fullmatch(r"\d{9,}(\.\d+)?", text):
            parsed = datetime.fromtimestamp(float(text), tz=UTC)
        elif (seconds := duration_seconds(text)) is not None:
            parsed = now - timedelta(seconds=seconds)
        else:
            parsed = parse_datetime(text)
    except (ValueError, OverflowError, OSError):
        parsed = None
    if parsed is None:
        raise RangeError(
            param,
            f"{param} must be an ISO time (2026-05-01T12:00:00Z), Unix seconds, "
            "or a duration back from now (15m, 1h, 7d)",
        )
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


def parse_range(
    params, *, default_since: datetime, default_until: datetime | None = None
) -> TimeRange:
    """Read `since`, `until` and `step` from query params, with defaults and bounds."""
    now = timezone.now()
    since = parse_time("since", params["since"], now) if params.get("since") else default_since
    until = parse_time("until", params["until"], now) if params.get("until") else None
    until = until or default_until or now
    if until <= since:
        # A window must not be empty: one sample still gets a minute of axis around it.
        try:
            until = since + timedelta(seconds=60)
        except OverflowError:
            raise RangeError("since", "since is too far in the future") from None
    if until - since > MAX_SPAN:
        raise RangeError("since", f"the window is at most {MAX_SPAN.days} days; narrow it")
    if params.get("step"):
        step_s = duration_seconds(str(params["step"]))
        if step_s is None or step_s < 1:
            raise RangeError("step", "step must be a whole number of seconds (or 1m, 1h) >= 1")
        step = int(step_s)
        if (until - since).total_seconds() / step > 10 * MAX_POINTS:
            raise RangeError(
                "step", f"step {step}s makes too many buckets; use at most {10 * MAX_POINTS}"
            )
    else:
        span = (until - since).total_seconds()
        step = next((s for s in STEPS if span / s <= MAX_POINTS), STEPS[-1])
    return TimeRange(since=since, until=until, step=step)
