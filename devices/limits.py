"""Limits of the device websocket, apart from the consumer so it calls each in one line.

- `socket_opened` / `socket_closed`: the sockets a device holds in this process; past
  WALLE_MAX_SOCKETS_PER_DEVICE the oldest is told why and closed (a device that reconnects
  over a half-dead socket keeps working; one token cannot hold hundreds of sockets).
- `throttled`: a token bucket of frames per socket; a frame over budget is dropped unread
  with an `error` frame (`rate_limited`, `retry_after`), and a socket that keeps flooding past
  a second burst is closed.
- `close_devices`: closes every socket of the given devices in this process, with an `error`
  frame first. Revocation publishes one notice on the push channel (devices/push.py), so every
  server process closes its sockets of a retired device as soon as the notice arrives.

Every close sends an `error` frame first, so a device never loses its socket without a reason.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings

from devices import counters
from walle_device import protocol

log = logging.getLogger(__name__)

# Close codes (4000-4999 are the application's, RFC 6455 §7.4.2).
CLOSE_REVOKED = 4403
CLOSE_REPLACED = 4409
CLOSE_FLOOD = 4429


class FrameBudget:
    """Token bucket: `rate` frames per second on average, bursts of up to `burst`."""

    __slots__ = ("burst", "rate", "refused", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.refused = 0  # refused in a row; reset by the next accepted frame

    def take(self, now: float | None = None) -> float:
        """0.0 if a frame may pass now, else the seconds until the next one may."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused = 0
            return 0.0
        self.refused += 1
        return (1 - self.tokens) / self.rate if self.rate > 0 else 60.0


class SocketTable:
    """Every device socket open in this process, by device uid, oldest first."""

    def __init__(self) -> None:
        self.by_uid: dict[str, list[Any]] = {}

    def add(self, socket: Any) -> list[Any]:
        """Register a socket; returns the older ones beyond the per-device limit."""
        sockets = self.by_uid.setdefault(socket.device_uid, [])
        sockets.append(socket)
        excess = len(sockets) - max(1, settings.WALLE_MAX_SOCKETS_PER_DEVICE)
        return sockets[:excess] if excess > 0 else []

    def remove(self, socket: Any) -> None:
        sockets = self.by_uid.get(socket.device_uid)
        if sockets and socket in sockets:
            sockets.remove(socket)
            if not sockets:
                del self.by_uid[socket.device_uid]


table = SocketTable()


async def _close(socket: Any, code: int, error: str, message: str) -> None:
    try:
        await socket.send(
            text_data=protocol.encode(protocol.message("error", code=error, message=message))
        )
        await socket.close(code=code)
    except Exception:  # already gone: nothing to tell
        log.debug("closing socket of %s failed", socket.device_uid, exc_info=True)


async def socket_opened(socket: Any) -> None:
    """Call after accept(): count the socket, close the device's oldest beyond the limit."""
    for old in table.add(socket):
        table.remove(old)
        await _close(
            old,
            CLOSE_REPLACED,
            "replaced",
            f"this device opened more than {settings.WALLE_MAX_SOCKETS_PER_DEVICE} connections; "
            "the oldest is closed (keep one connection per device)",
        )


def socket_closed(socket: Any) -> None:
    """Call from disconnect()."""
    table.remove(socket)


async def throttled(socket: Any) -> bool:
    """Call first in receive(): True if this frame is dropped (the device has been told)."""
    budget: FrameBudget | None = getattr(socket, "_walle_budget", None)
    if budget is None:
        budget = FrameBudget(
            settings.WALLE_DEVICE_FRAMES_PER_SECOND, settings.WALLE_DEVICE_FRAME_BURST
        )
        socket._walle_budget = budget
    wait = budget.take()
    if not wait:
        return False
    counters.FRAMES_REJECTED.inc()
    if budget.refused > budget.burst:
        # Still flooding after a whole burst of refusals: stop reading this socket.
        await _close(
            socket,
            CLOSE_FLOOD,
            "rate_limited",
            "too many frames after being told to slow down; reconnect with backoff",
        )
        return True
    await socket.send(
        text_data=protocol.encode(
            protocol.message(
                "error",
                code="rate_limited",
                message=f"more than {settings.WALLE_DEVICE_FRAMES_PER_SECOND:g} frames per second; "
                "this frame was dropped unread, send it again later",
                retry_after=round(wait, 3),
            )
        )
    )
    return True


async def close_devices(uids: list[str], reason: str = "revoked") -> int:
    """Close every socket of these devices held by this process; returns how many."""
    closed = 0
    for uid in uids:
        for socket in list(table.by_uid.get(uid, ())):
            table.remove(socket)
            await _close(
                socket,
                CLOSE_REVOKED,
                reason,
                "this device was retired by an admin of its app; its token no longer works",
            )
            closed += 1
    return closed
