"""What every REST endpoint shares: strict JSON bodies, bounded pages, throttles, JSON errors.

Each piece closes a class of failure by construction rather than per view:
- StrictJSONParser: bodies parse through walle_device.protocol.loads_strict (no NaN/Infinity,
  no numbers beyond a double or 64 bits, no NUL characters, bounded depth) and are read with
  a byte limit, so what a view gets can be stored on SQLite and PostgreSQL alike.
- Pagination: `limit` and `offset` are bounded; huge numbers are a 400, never an overflow.
- Throttles: per user or token, per address for anonymous callers and failed tokens, per
  enrollment key and address, per device; rates from settings, read at call time.
- exception_handler: Django's own refusals (too many files, body too large, suspicious
  input) become JSON 4xx with a reason, like every DRF error.
"""

from __future__ import annotations

import hashlib
import math

from django.conf import settings
from django.core.exceptions import (
    BadRequest,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from rest_framework import exceptions, pagination, status, throttling
from rest_framework.authentication import TokenAuthentication
from rest_framework.parsers import JSONParser

from walle_device.protocol import loads_strict


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "the request body is too large"
    default_code = "too_large"


class StrictJSONParser(JSONParser):
    """JSON bodies, refused with a 400 unless every supported database can store them."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.WALLE_MAX_JSON_BODY_BYTES
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise PayloadTooLarge(
                f"the JSON body is larger than {limit} bytes; send less per request"
            )
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return loads_strict(data.decode(encoding))
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None


class Pagination(pagination.LimitOffsetPagination):
    """Limit/offset pages with bounds: at most max_limit rows, offsets within 64-bit range."""

    default_limit = 100
    max_limit = 1000
    max_offset = 2**31 - 1

    def get_offset(self, request) -> int:
        raw = request.query_params.get(self.offset_query_param, "")
        if raw and (not raw.isascii() or not raw.isdigit() or int(raw) > self.max_offset):
            raise exceptions.ValidationError(
                {"offset": [f"must be a whole number between 0 and {self.max_offset}"]}
            )
        return int(raw) if raw else 0

    def get_limit(self, request) -> int:
        raw = request.query_params.get(self.limit_query_param, "")
        if not raw:
            return self.default_limit
        if not raw.isascii() or not raw.isdigit() or int(raw[:18]) < 1:
            raise exceptions.ValidationError(
                {
                    "limit": [
                        f"must be a whole number from 1 (at most {self.max_limit} are returned)"
                    ]
                }
            )
        return min(int(raw[:18]) if len(raw) <= 18 else self.max_limit, self.max_limit)


# --- throttles ----------------------------------------------------------------------------


class _Throttle(throttling.SimpleRateThrottle):
    """A sliding window of `rate`, kept as two counters per caller, whatever the rate.

    DRF's SimpleRateThrottle keeps every request's timestamp in one cache value, read, trimmed
    and written back whole on every request: at 3,000/min that is a list of 3,000 floats
    pickled per API call. Here a caller has one counter per fixed window (`key:index`); the
    count in the sliding window ending now is the current window's counter plus the previous
    one's, weighted by how much of it the sliding window still covers (the usual two-bucket
    approximation: exact when requests are spread evenly over the previous window; the
    previous window's share is rounded up, so a burst is never undercounted at an edge). Two
    small reads and one increment per request, on the in-process cache and on Redis alike
    (Redis INCR is atomic across processes).

    Rates come from settings.WALLE_THROTTLE_RATES at call time, so tests and env can set them.
    """

    def get_rate(self) -> str | None:
        return settings.WALLE_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        # Count first, then judge by the count that includes this request: two concurrent
        # requests can both read "one left", but only one of them increments to the limit
        # (the increment is atomic on both backends). A refused request is taken back out, so
        # refusals do not lengthen the wait.
        self._windows()
        cur = self._increment()
        if not self._over(cur - 1):
            return True
        self._uncount()
        return self.throttle_failure()

    def _windows(self) -> None:
        self.now = self.timer()
        index, self._into = divmod(self.now, self.duration)
        self._current = f"{self.key}:{int(index)}"
        self._previous = f"{self.key}:{int(index) - 1}"

    def _over_budget(self) -> bool:
        """Read the two windows' counters; True (and `_wait` set) if no request is left."""
        self._windows()
        counts = self.cache.get_many([self._current, self._previous])
        return self._over(int(counts.get(self._current, 0)), counts)

    def _over(self, cur: int, counts: dict | None = None) -> bool:
        """True (and `_wait` set) if `cur` requests in this window leave none for one more."""
        if counts is None:
            counts = {self._previous: self.cache.get(self._previous, 0)}
        prev = int(counts.get(self._previous) or 0)
        limit, span, into = self.num_requests, self.duration, self._into
        # The previous window's weight is rounded up: a burst that just crossed a window edge
        # still counts whole, so limit + 1 requests in a row are refused wherever they fall.
        if math.ceil(prev * (1 - into / span) - 1e-9) + cur < limit:
            self._wait = 0.0
            return False
        if cur >= limit:
            # Not before this window ends, and then until its own weight is down to limit - 1.
            self._wait = (span - into) + span * max(0.0, 1 - (limit - 1) / max(cur, 1))
        else:
            # Until the previous window's weight is down to what leaves room for one more.
            self._wait = max(0.0, span * (1 - (limit - cur - 1) / prev) - into)
        return True

    def _increment(self) -> int:
        """Add this request to the current window's counter; the counter after it."""
        # Kept for two windows: the one after it still weighs it.
        if self.cache.add(self._current, 1, timeout=2 * self.duration + 1):
            return 1
        try:
            return int(self.cache.incr(self._current))
        except ValueError:  # expired between add and incr
            self.cache.set(self._current, 1, timeout=2 * self.duration + 1)
            return 1

    def _uncount(self) -> None:
        try:
            self.cache.decr(self._current)
        except ValueError:  # expired meanwhile: nothing left to take back
            pass

    def wait(self) -> float:
        return max(getattr(self, "_wait", 0.0), 0.001)


class UserThrottle(_Throttle):
    """Authenticated API callers (session or token), per user."""

    scope = "user"

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        if not getattr(user, "is_authenticated", False):
            return None
        return self.cache_format % {"scope": self.scope, "ident": user.pk}


class AnonThrottle(_Throttle):
    """Anonymous callers, per client address."""

    scope = "anon"

    def get_cache_key(self, request, view):
        if getattr(getattr(request, "user", None), "is_authenticated", False):
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class EnrollAddressThrottle(_Throttle):
    scope = "enroll_address"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class EnrollKeyThrottle(_Throttle):
    """Per enrollment key (hashed: the cache never holds a key)."""

    scope = "enroll_key"

    def get_cache_key(self, request, view):
        key = request.data.get("enrollment_key") if isinstance(request.data, dict) else None
        if not isinstance(key, str) or not key:
            return None
        ident = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:32]
        return self.cache_format % {"scope": self.scope, "ident": ident}


class DeviceThrottle(_Throttle):
    """Device HTTP endpoints, per device (request.auth is the Device)."""

    scope = "device"

    def get_cache_key(self, request, view):
        uid = getattr(request.auth, "uid", None)
        ident = uid or self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class FailedAuthThrottle(_Throttle):
    """Wrong credentials, per address: past the rate every attempt answers 429, right or wrong."""

    scope = "auth_failure"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def blocked(self, request) -> float | None:
        """Seconds to wait if this address is over its budget of failures, without counting."""
        if self.rate is None:
            return None
        self.key = self.get_cache_key(request, None)
        return self.wait() if self._over_budget() else None

    def record(self, request) -> None:
        if self.rate is not None:
            self.allow_request(request, None)


def check_failed_auth(request) -> None:
    """Raise Throttled when this address has failed to authenticate too often."""
    if (wait := FailedAuthThrottle().blocked(request)) is not None:
        raise exceptions.Throttled(
            wait, detail="too many failed authentication attempts from this address"
        )


def record_failed_auth(request) -> None:
    FailedAuthThrottle().record(request)


class ThrottledTokenAuthentication(TokenAuthentication):
    """DRF's token authentication; wrong tokens count against the caller's address."""

    def authenticate(self, request):
        scheme = request.META.get("HTTP_AUTHORIZATION", "").split(" ", 1)[0].lower()
        if scheme != self.keyword.lower():
            return None
        check_failed_auth(request)
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            record_failed_auth(request)
            raise


# --- errors -------------------------------------------------------------------------------


def exception_handler(exc, context):
    """DRF's handler, plus Django's request refusals as JSON 4xx with a reason."""
    # Imported here: rest_framework.views imports the authentication classes of this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(f"{exc}; send less per request")
    elif isinstance(exc, TooManyFilesSent):
        exc = exceptions.ValidationError(
            {"files": [f"at most {settings.WALLE_MAX_VERSION_FILES} files per version"]}
        )
    elif isinstance(exc, TooManyFieldsSent):
        exc = exceptions.ValidationError({"detail": [f"{exc}; send fewer form fields"]})
    elif isinstance(exc, SuspiciousOperation | BadRequest):
        exc = exceptions.ValidationError({"detail": [str(exc) or "bad request"]})
    return drf_exception_handler(exc, context)
