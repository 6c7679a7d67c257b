"""`python -m walle_web.serve`: daphne with a deadline heap and event-driven reaping still
enforces daphne's rules (connect timeout, websocket timeout, keepalive pings, the close
timeout of an application that outlives its socket) and forgets closed connections. Real
server process, real websockets."""

from __future__ import annotations

import asyncio
import pprint
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import websockets

from tests.live import free_port, poll, start_daphne, stop_processes


@contextmanager
def serving(*options: str):
    """The test application under walle_web.serve with only these options (daphne's defaults
    otherwise)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_daphne(
            port,
            Path(tmp) / "serve.log",
            application="walle_web.tests.serve_app:application",
            options=options,
            health="/stats",
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_processes([proc])


def stats(url: str) -> dict:
    return httpx.get(url + "/stats", timeout=5).json()


def ws_url(url: str, path: str) -> str:
    return url.replace("http://", "ws://") + path


def test_sockets_work_and_closed_connections_are_forgotten():
    with serving() as url:

        async def many() -> list[str]:
            sockets = [await websockets.connect(ws_url(url, "/echo")) for _ in range(40)]
            replies = []
            for i, ws in enumerate(sockets):
                await ws.send(f"m{i}")
                replies.append(await ws.recv())
            assert stats(url)["connections"] >= 40
            for ws in sockets:
                await ws.close()
            return replies

        assert asyncio.run(many()) == [f"m{i}" for i in range(40)]
        # Every application finished and every connection left the server's table (only the
        # /stats request itself may be in it while it is answered).
        poll(
            lambda: stats(url),
            until=lambda s: s["running"] == 0 and s["connections"] <= 1,
            what="every application finished and its connection forgotten",
        )
        assert stats(url)["finished"] == 40


def test_open_sockets_keep_nothing_of_their_opening_handshake():
    with serving() as url:

        async def opened() -> tuple[dict, list[str]]:
            sockets = [await websockets.connect(ws_url(url, "/echo")) for _ in range(5)]
            held = stats(url)
            replies = []
            for ws in sockets:  # still working after the handshake leftovers went
                await ws.send("still here")
                replies.append(await ws.recv())
                await ws.close()
            return held, replies

        held, replies = asyncio.run(opened())
        assert held["connections"] >= 5 and held["handshake_kept"] == []
        assert replies == ["still here"] * 5


def test_a_handshake_the_application_never_accepts_is_refused_after_the_connect_timeout():
    options = ("--websocket_connect_timeout", "2", "--application-close-timeout", "1")
    with serving(*options) as url:

        async def attempt() -> float:
            started = time.monotonic()
            # daphne (and autobahn under it) refuse or drop the handshake; either way the
            # client never gets an open socket.
            with pytest.raises(websockets.InvalidHandshake):
                await websockets.connect(ws_url(url, "/never"), open_timeout=20)
            return time.monotonic() - started

        assert asyncio.run(attempt()) < 20
        # The application that never accepted is cancelled, its connection forgotten.
        poll(
            lambda: stats(url),
            until=lambda s: s["cancelled"] == 1 and s["connections"] <= 1,
            what="the application that never accepted to be cancelled and forgotten",
        )


def test_the_websocket_timeout_still_closes_an_open_socket():
    with serving("--websocket_timeout", "2") as url:

        async def held() -> None:
            async with websockets.connect(ws_url(url, "/echo"), ping_interval=None) as ws:
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), timeout=20)

        asyncio.run(held())
        poll(lambda: stats(url), until=lambda s: s["running"] == 0, what="no application running")


def test_the_server_pings_open_sockets_at_its_interval():
    with serving("--ping-interval", "1", "--ping-timeout", "30") as url:

        async def pinged() -> int:
            async with websockets.connect(ws_url(url, "/echo"), ping_interval=None) as ws:
                seen = 0
                original = ws.protocol.recv_frame

                def counting(frame) -> None:
                    nonlocal seen
                    seen += frame.opcode == websockets.frames.Opcode.PING
                    original(frame)

                ws.protocol.recv_frame = counting
                await asyncio.sleep(5)
                return seen

        assert asyncio.run(pinged()) >= 2


def test_an_application_that_outlives_its_socket_is_cancelled_after_the_close_timeout():
    with serving("--application-close-timeout", "1") as url:

        async def once() -> None:
            async with websockets.connect(ws_url(url, "/linger")) as ws:
                await ws.send("x")
                assert await ws.recv() == "x"

        asyncio.run(once())
        poll(
            lambda: stats(url),
            until=lambda s: s["cancelled"] == 1 and s["connections"] <= 1,
            what="the lingering application to be cancelled and forgotten",
        )
        assert stats(url)["running"] == 0


def test_large_and_many_frames_arrive_whole_and_in_order():
    """Writes go straight to the socket when nothing is queued; what the socket does not take
    is queued behind: large frames sent back to back come back complete and in order."""
    with serving() as url:

        async def flood() -> list[str]:
            async with websockets.connect(ws_url(url, "/echo"), max_size=2**21) as ws:
                assert stats(url)["transports"] == ["WriteThroughServer"]
                sent = [f"{i:04d}" + "x" * (150_000 + i) for i in range(40)]
                for text in sent:
                    await ws.send(text)
                got = [await asyncio.wait_for(ws.recv(), 30) for _ in sent]
                return [g == s for g, s in zip(got, sent, strict=True)]

        assert all(asyncio.run(flood()))
        poll(
            lambda: stats(url),
            until=lambda s: s["finished"] == 1,
            what="the echo application to finish",
        )


def test_access_log_lines_are_written_within_a_few_seconds(tmp_path):
    log = tmp_path / "access.log"
    with serving("--access-log", str(log)) as url:
        for _ in range(5):
            httpx.get(url + "/stats", timeout=5)

        async def one() -> None:
            async with websockets.connect(ws_url(url, "/echo")) as ws:
                await ws.send("x")
                await ws.recv()

        asyncio.run(one())
        poll(
            lambda: log.is_file() and log.read_text().count("GET /stats") >= 5,
            what=f"five GET /stats lines in {log}",
        )
        poll(lambda: "WSDISCONNECT /echo" in log.read_text(), what=f"WSDISCONNECT /echo in {log}")


def test_autobahn_debug_formatting_is_deferred_and_still_right():
    from autobahn.websocket import protocol

    from walle_web.serve import LazyFormat, defer_autobahn_debug_formatting

    defer_autobahn_debug_formatting()
    defer_autobahn_debug_formatting()  # idempotent
    options = [("openHandshakeTimeout", 5, "WebSocketServerFactory")] * 3
    lazy = protocol.pformat(options)
    assert isinstance(lazy, LazyFormat)  # nothing formatted until a log line asks
    assert str(lazy) == repr(lazy) == pprint.pformat(options)
    timings = protocol.Timings()
    timings.track("onOpen")
    assert isinstance(str(timings), str) and "onOpen" in str(timings)
