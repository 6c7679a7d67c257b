"""A small ASGI application for tests/test_serve.py, served by `python -m walle_web.serve`.

Websocket paths: `/echo` accepts and echoes (text as text, bytes as bytes); `/never` never accepts (the server's connect
timeout must reject it); `/linger` accepts, and after the disconnect keeps running (the
server must cancel it after its close timeout). HTTP `/stats` answers what the application
and the server hold: connections in the server's table, applications running, cancelled.
"""

from __future__ import annotations

import asyncio
import gc
import json

STATS = {"running": 0, "cancelled": 0, "finished": 0}


def _server() -> dict:
    from walle_web.serve import LeanServer

    servers = [obj for obj in gc.get_objects() if isinstance(obj, LeanServer)]
    if not servers:
        return {"connections": -1, "transports": []}
    transports = {
        type(getattr(p, "transport", None) or p.channel.transport).__name__
        for p in servers[0].connections
    }
    from walle_web.serve import _HANDSHAKE_ONLY

    kept = {
        name
        for p in servers[0].connections
        for name in _HANDSHAKE_ONLY
        if getattr(p, "state", None) == getattr(p, "STATE_OPEN", -1) and name in vars(p)
    }
    return {
        "connections": len(servers[0].connections),
        "transports": sorted(transports),
        "handshake_kept": sorted(kept),
    }


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "http":
        await receive()
        body = json.dumps({**STATS, **_server()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    STATS["running"] += 1
    try:
        await receive()  # websocket.connect
        if scope["path"] == "/never":
            await asyncio.sleep(3600)
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message.get("text") or ""})
        if scope["path"] == "/linger":
            await asyncio.sleep(3600)
        STATS["finished"] += 1
    except asyncio.CancelledError:
        STATS["cancelled"] += 1
        raise
    finally:
        STATS["running"] -= 1
