"""`python -m walle_web.serve`: daphne with a deadline heap and event-driven reaping still
enforces daphne's rules (connect timeout, websocket timeout, keepalive pings, the close
timeout of an application that outlives its socket) and forgets closed connections. Real
server process, real websockets."""

from __future__ import annotations

import asyncio
import base64
import os
import pprint
import socket
import struct
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


def _raw_websocket(url: str, path: str) -> socket.socket:
    """A websocket opened by hand on a plain TCP socket, so a test reads the server's frames
    as bytes on the wire, not as a client library parsed them."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "the server closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.2), built here independently of the server's code."""
    mask = os.urandom(4)
    n = len(payload)
    if n <= 125:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "the server closed the socket"
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("opcode", [1, 2])
def test_frames_on_the_wire_are_exact_at_every_length_encoding(opcode):
    """The server writes its frames itself (walle_web.serve.LeanWebSocketProtocol.sendMessage):
    at each boundary of the 7-, 16- and 64-bit length encodings, text and binary, what
    arrives is exactly FIN + opcode, the unmasked length, and the payload."""
    lengths = [1, 2, 124, 125, 126, 127, 1000, 65535, 65536, 65537, 200_000]
    with serving() as url:
        sock = _raw_websocket(url, "/echo")
        try:
            for n in lengths:
                payload = (b"%08d" % n * (n // 8 + 1))[:n]
                sock.sendall(_client_frame(opcode, payload))
                if n <= 125:
                    expected = bytes((0x80 | opcode, n))
                elif n <= 0xFFFF:
                    expected = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
                else:
                    expected = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
                expected += payload
                assert _read_exactly(sock, len(expected)) == expected, n
        finally:
            sock.close()


def test_frame_header_matches_autobahns_own_frames():
    """The header the fast path writes is byte for byte what autobahn's sendFrame builds for
    the same unmasked server frame (sizes across every length encoding, both opcodes)."""
    from autobahn.websocket.protocol import WebSocketServerProtocol

    from walle_web.serve import frame_header

    class Capture(WebSocketServerProtocol):
        def __init__(self) -> None:
            self.wire = []
            self.maskServerFrames = False
            self.logFrames = False
            self.trafficStats = type("S", (), {"outgoingWebSocketFrames": 0})()

            class Factory:
                isServer = True

            self.factory = Factory()

        def sendData(self, data, sync=False, chopsize=None) -> None:
            self.wire.append(data)

    for opcode in (1, 2):
        for n in (0, 1, 125, 126, 127, 65535, 65536, 70_000):
            capture = Capture()
            capture.sendFrame(opcode=opcode, payload=b"p" * n)
            assert capture.wire == [frame_header(opcode, n) + b"p" * n], (opcode, n)
