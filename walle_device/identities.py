"""The identities of a simulated fleet, kept in one file so the next start reuses the same
devices instead of enrolling new ones (`make run` twice is the same 50 phones, not 100)."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from urllib.parse import urljoin

import httpx

from walle_device.enrollment import Identity


def load(path: Path, server: str) -> list[Identity]:
    """The stored identities in enrollment order, pointed at `server` ([] if none). The server
    may have moved (another port): `still_enrolled` asks it whether it knows them."""
    try:
        rows = json.loads(path.read_text())
        return [replace(Identity(**row), server=server) for row in rows]
    except (OSError, ValueError, TypeError):
        return []


def save(path: Path, identities: list[Identity]) -> None:
    """Write atomically and owner-only: the file holds device tokens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(i) for i in identities]))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


async def still_enrolled(
    http: httpx.AsyncClient, identities: list[Identity], concurrency: int = 32
) -> list[bool]:
    """Does the server still know each device? (An empty tunnel batch answers 401 if not:
    the database was reset since.) Unreachable servers count as yes; connecting will retry."""
    gate = asyncio.Semaphore(concurrency)

    async def one(identity: Identity) -> bool:
        async with gate:
            try:
                response = await http.post(
                    urljoin(identity.server, "/api/v1/tunnel/"),
                    json={"items": []},
                    headers={"Authorization": f"Bearer {identity.token}"},
                )
            except httpx.HTTPError:
                return True
            return response.status_code != 401

    return list(await asyncio.gather(*(one(i) for i in identities)))
