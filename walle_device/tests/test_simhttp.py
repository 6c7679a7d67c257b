"""The fleet simulator's GET pool against small loopback servers: kept-alive and one-shot
connections, chunked and length-delimited bodies, and failures that surface as httpx's
transport errors (what the device runtime waits out)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from walle_device.simhttp import KeepAlivePool


async def _serve(answer, *, keep_alive: bool):
    """A server that answers every GET with `answer(path)`; without keep-alive it hangs up
    after each answer (as a server that sends no `Connection: close` may)."""
    connections = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                writer.write(answer(path))
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections


def _length(path: str) -> bytes:
    body = f"body of {path}".encode()
    return b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: "x"\r\n\r\n%s' % (len(body), body)


def _chunked(path: str) -> bytes:
    return (
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nnot \r\n5\r\nfound\r\n0\r\n\r\n"
    )


@pytest.mark.parametrize("keep_alive", [True, False])
def test_every_get_gets_its_own_answer_over_kept_or_closed_connections(keep_alive):
    async def scenario() -> tuple[list, int]:
        server, url, connections = await _serve(_length, keep_alive=keep_alive)
        pool = KeepAlivePool(connections=4)
        async with server:
            answers = await asyncio.gather(*(pool.get(f"{url}/content/{i}") for i in range(12)))
            for i in range(12, 18):  # one after another: reused, or reopened after a hang-up
                answers.append(await pool.get(f"{url}/content/{i}"))
            await pool.aclose()
        return answers, len(connections)

    answers, opened = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [200] * 18
    assert [a.content for a in answers] == [f"body of /content/{i}".encode() for i in range(18)]
    assert answers[0].headers["etag"] == '"x"'
    assert opened <= 4 if keep_alive else opened == 18


def test_a_chunked_answer_is_read_whole():
    async def scenario() -> httpx.Response:
        server, url, _ = await _serve(_chunked, keep_alive=True)
        pool = KeepAlivePool()
        async with server:
            first = await pool.get(url + "/missing")
            second = await pool.get(url + "/missing")
            await pool.aclose()
        assert second.content == first.content
        return first

    answer = asyncio.run(scenario())
    assert answer.status_code == 404 and answer.content == b"not found"


def test_an_unreachable_server_is_a_transport_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def scenario() -> None:
        pool = KeepAlivePool()
        with pytest.raises(httpx.TransportError):
            await pool.get(f"http://127.0.0.1:{port}/content/x")

    asyncio.run(scenario())
