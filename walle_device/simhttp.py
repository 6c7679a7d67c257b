"""The fleet simulator's content downloads: plain HTTP/1.1 GETs over kept-alive asyncio streams.

Every simulated device still makes its own GET of the manifest (and of each file it lacks)
to the server; what changes is only the client-side machinery that thousands of devices in
one process share. httpx + httpcore cost the simulator about a third of its event loop at
1,000 devices (bench/README.md, "Delivery"): per request httpx builds its request and
response models, runs its auth/redirect/cookie layers, and httpcore's pool asks every pooled
connection whether it expired, which through anyio's socket attributes is a `getpeername`
system call per connection per request. A phone's single HTTP client pays none of that
fan-out; here a GET is one write and a read of the status line, the headers and the body.

Answers are `httpx.Response` objects and failures `httpx.TransportError`s, so the device
runtime (walle_device.client) handles them exactly as it handles httpx's own.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

_MAX_HEAD = 64 * 1024


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        # The server closed an idle connection (keep-alive timeout, a non-keep-alive server):
        # the EOF is already in the reader, no system call needed to see it.
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


class _Stale(Exception):
    """A reused connection closed before any byte of the answer: send again on a fresh one."""


class KeepAlivePool:
    """GETs to any origin over at most `connections` kept-alive connections at a time."""

    def __init__(self, connections: int = 64, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._gate = asyncio.Semaphore(connections)
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._origins: dict[str, tuple[str, int, bytes]] = {}

    def _origin(self, url: str) -> tuple[tuple[str, int], bytes]:
        """((host, port), the request's target and Host header lines) of an http:// URL."""
        scheme, netloc, path, query, _ = urlsplit(url)
        if scheme != "http":
            raise httpx.UnsupportedProtocol(f"the simulator's pool speaks plain http, not {url}")
        known = self._origins.get(netloc)
        if known is None:
            host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "80")
            known = (host.strip("[]"), int(port), f"Host: {netloc}\r\n".encode("latin-1"))
            self._origins[netloc] = known
        host, port, host_line = known
        target = (path or "/") + (f"?{query}" if query else "")
        return (host, port), b"GET %s HTTP/1.1\r\n%sAccept-Encoding: identity\r\n\r\n" % (
            target.encode("latin-1"),
            host_line,
        )

    async def get(self, url: str) -> httpx.Response:
        origin, request = self._origin(url)
        async with self._gate:
            try:
                async with asyncio.timeout(self.timeout):
                    idle = self._idle.setdefault(origin, [])
                    while idle:
                        conn = idle.pop()
                        if not conn.usable():
                            conn.close()
                            continue
                        try:
                            return await self._exchange(origin, conn, request, reused=True)
                        except _Stale:
                            continue
                    conn = _Conn(*await asyncio.open_connection(*origin))
                    return await self._exchange(origin, conn, request, reused=False)
            except TimeoutError:
                raise httpx.ReadTimeout(f"no answer from {url} in {self.timeout:g} s") from None
            except _Stale as exc:  # only from a fresh connection: the server hung up on us
                raise httpx.RemoteProtocolError(f"{url}: {exc}") from None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                raise httpx.ReadError(f"{url}: {type(exc).__name__}: {exc}") from None
            except ValueError as exc:  # a malformed answer
                raise httpx.RemoteProtocolError(f"{url}: {exc}") from None

    async def _exchange(
        self, origin: tuple[str, int], conn: _Conn, request: bytes, reused: bool
    ) -> httpx.Response:
        keep = False
        try:
            conn.writer.write(request)
            try:
                head = await conn.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _Stale("the connection closed before an answer") from None
                raise
            except (ConnectionResetError, BrokenPipeError):
                if reused:
                    raise _Stale("the connection was reset before an answer") from None
                raise
            if len(head) > _MAX_HEAD:
                raise ValueError("response head too large")
            status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
            version, status, _ = (status_line + " ").split(" ", 2)
            if not version.startswith("HTTP/1."):
                raise ValueError(f"not an HTTP/1.x answer: {status_line!r}")
            headers = []
            length = None
            chunked = False
            close = version == "HTTP/1.0"
            for line in lines:
                name, _, value = line.partition(":")
                value = value.strip()
                headers.append((name, value))
                lower = name.lower()
                if lower == "content-length":
                    length = int(value)
                elif lower == "transfer-encoding":
                    chunked = "chunked" in value.lower()
                elif lower == "connection":
                    close = "close" in value.lower()
            if chunked:
                body = await self._read_chunked(conn.reader)
            elif length is not None:
                body = await conn.reader.readexactly(length) if length else b""
            else:
                body = await conn.reader.read()  # delimited by the server closing
                close = True
            keep = not close
            return httpx.Response(int(status), headers=headers, content=body)
        finally:
            if keep:
                self._idle.setdefault(origin, []).append(conn)
            else:
                conn.close()

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
