"""Who a device is: enrollment with the cloud, the identity it keeps, where it connects.

A device enrolls once with its app's enrollment key and keeps what the server hands back (its
id, secret token and the platform's release key) in a small owner-only file. The backoff here
is shared by every retry towards the server (enrollment, reconnects), so a fleet that lost its
server does not come back in lockstep.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0


class EnrollError(Exception):
    """The server refused to enroll this device."""


@dataclass
class Identity:
    """What a device keeps after enrolling: its id, secret token and the platform's release key."""

    device_id: str
    token: str
    app: str
    release_key: str
    server: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Identity | None:
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


async def enroll(
    http: httpx.AsyncClient, server: str, enroll_key: str, attrs: dict, attempts: int = 8
) -> Identity:
    rng = random.Random()
    for attempt in range(attempts):
        response = await http.post(
            urljoin(server, "/api/v1/devices/enroll/"),
            json={"enrollment_key": enroll_key, "attrs": attrs},
        )
        if response.status_code not in (429, 503) or attempt == attempts - 1:
            break
        # A busy server says when to come back; nothing was stored.
        retry_after = float(response.headers.get("Retry-After", "1") or 1)
        await asyncio.sleep(backoff_delay(attempt, rng, retry_after))
    if response.status_code != 201:
        raise EnrollError(f"enrollment refused ({response.status_code}): {response.text[:300]}")
    body = response.json()
    return Identity(
        device_id=body["device_id"],
        token=body["token"],
        app=body["app"],
        release_key=body["release_key"],
        server=server,
    )


def ws_url(server: str) -> str:
    base = server.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/ws/device/"
    return "ws://" + base.removeprefix("http://") + "/ws/device/"


def backoff_delay(attempt: int, rng: random.Random, retry_after: float = 0.0) -> float:
    """Exponential backoff with full jitter: a fleet that lost its server does not return in
    lockstep. A server's `retry_after` hint sets the scale instead when it is longer."""
    delay = rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2**attempt)))
    if retry_after > 0:
        delay = max(delay, rng.uniform(0.5, 1.5) * min(retry_after, BACKOFF_CAP_S))
    return delay
