"""daphne, with housekeeping that costs what changes rather than what is connected.

`python -m walle_web.serve` takes daphne's command line (the dev server, `make run` and the live
tests run it instead of `python -m daphne`). Stock daphne walks every connection every second
(reaping finished applications) and every two seconds (timeouts and keepalive pings): with
10,000 device sockets that was about a third of the event loop in the 10k profile
(bench/README.md), spent looking at sockets where nothing had happened.

`LeanServer` keeps daphne's rules and changes only how connections are found:

- a connection is looked at for reaping when its application finished or its socket closed
  (a done-callback and `protocol_disconnected` mark it), not on every tick;
- timeouts and pings are deadlines in a heap: each connection is visited when its next
  deadline falls due (connect timeout, next ping, websocket or HTTP timeout), daphne's own
  `check_timeouts` enforces the rule, and the next deadline is pushed;
- an application still running `application_close_timeout` after its socket closed is
  cancelled, as in daphne, by a deadline pushed when the socket closed.

It also starts what the server process runs beside its sockets: the process binds its event
loop and subscribes to notices before the first request, and in the embedded configuration
(WALLE_ROLLOUT_IN_SERVER) runs the rollout loop on a thread, stopped before the reactor
shuts down (releases/worker.py).

Two per-write costs go too: a write with nothing queued before it is sent at once instead
of registering the socket for writing and sending on the next loop pass
(`WriteThroughServer`), and access-log lines are written once a second, not one syscall
each (`BatchedLog`).
"""

from __future__ import annotations

# daphne.server installs Twisted's asyncio reactor: it must be imported before anything
# that imports twisted.internet.reactor.
from daphne.server import Server  # isort:skip

import asyncio
import heapq
import itertools
import logging
import os
import pprint
import struct
import sys
import time
from pathlib import Path
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import tcp

logger = logging.getLogger(__name__)

# Kinds of heap entries.
_TIMEOUT = 0  # run the protocol's check_timeouts, then schedule its next deadline
_CLOSE = 1  # the socket closed application_close_timeout ago: cancel a lingering application

# A deadline is never pushed closer than this to now, so a rule that did not fire (a state
# change between scheduling and visiting) cannot make the checker spin.
_MIN_STEP_S = 0.5


class WriteThroughServer(tcp.Server):
    """A TCP connection that sends at once when nothing is queued before it.

    Twisted's transport.write only queues: it registers the socket for writing (an epoll_ctl)
    and sends on the next loop pass, then unregisters (another epoll_ctl). For a server
    answering thousands of small frames that registration pair was 12% of the event loop
    in the 10k profile (bench/README.md). Here a write with an empty queue goes straight to
    send(); only what the socket does not take is queued the usual way, so order, back
    pressure and error handling stay Twisted's.
    """

    def write(self, data: bytes) -> None:
        if (
            data
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not getattr(self, "TLS", False)
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
        ):
            sent = self.writeSomeData(data)
            if isinstance(sent, int):  # else the connection is lost: let doWrite see it
                if sent >= len(data):
                    return
                data = data[sent:]
        super().write(data)


# What an open websocket keeps only because its opening handshake put it there: autobahn's
# parsed request (raw bytes, header dicts, URI parts) and daphne's copies for building the
# scope. Nothing reads them once the socket is open; at 10,000 idle sockets they were a
# few KiB each (bench/idle_socket.py).
_HANDSHAKE_ONLY = (
    "http_request_data",
    "http_response_data",
    "http_headers",
    "http_status_line",
    "http_request_uri",
    "http_request_params",
    "http_request_host",
    "http_request_path",
    "websocket_origin",
    "websocket_protocols",
    "websocket_extensions",
    "clean_headers",
    "application_deferred",
    "_raw_query_string",
)


# Close codes of the IANA registry an endpoint may send besides 1000 (RFC 6455 7.4.1, and
# 1012-1014 registered since): going away, policy violation, internal error, service
# restart, try again later, bad gateway.
SERVER_CLOSE_CODES = frozenset({1001, 1008, 1011, 1012, 1013, 1014})


class _OpenedRequest:
    """The one part of the handshake request daphne reads after the socket opened (its
    access-log lines name the path)."""

    __slots__ = ("path",)

    def __init__(self, path: bytes) -> None:
        self.path = path


class LeanWebSocketProtocol(WebSocketProtocol):
    """daphne's websocket protocol, minus what only the opening handshake needed."""

    def onOpen(self) -> None:
        super().onOpen()
        state = self.__dict__
        for name in _HANDSHAKE_ONLY:
            state.pop(name, None)
        request = state.get("request")
        if request is not None:
            state["request"] = _OpenedRequest(request.path)
        # A dict never shrinks when keys go: a fresh copy is sized for what is left.
        self.__dict__ = dict(state)

    def sendMessage(
        self, payload, isBinary=False, fragmentSize=None, sync=False, doNotCompress=False
    ) -> None:
        """Every message the application sends (answers, acks, notices): one frame, written.

        autobahn's sendMessage/sendFrame/sendData build the same bytes through a dozen checks
        and, per frame, format a debug line's arguments whether or not debug logging is on
        (~4 us of the ~10 us a small answer cost). For what a server sends here (no
        compression, no fragmentation, no masking, no timing or frame logs, nothing queued
        by a chopped or synced write before it) the frame is written directly, with the same
        traffic counters; anything else goes the library's way.
        """
        length = len(payload)
        if (
            type(payload) is bytes
            and fragmentSize is None
            and not sync
            and self.state == self.STATE_OPEN
            and self._perMessageCompress is None
            and not self.maskServerFrames
            and not self.trackedTimings
            and not self.logFrames
            and not self.logOctets
            and not self.send_queue
            and (self.autoFragmentSize <= 0 or length <= self.autoFragmentSize)
            and not 0 < self.maxMessagePayloadSize < length
        ):
            frame = frame_header(2 if isBinary else 1, length) + payload
            stats = self.trafficStats
            stats.outgoingWebSocketMessages += 1
            stats.outgoingOctetsAppLevel += length
            stats.outgoingOctetsWebSocketLevel += length
            stats.outgoingWebSocketFrames += 1
            stats.outgoingOctetsWireLevel += len(frame)
            self.transport.write(frame)
            return
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)

    def serverClose(self, code=None) -> None:
        # autobahn's public sendClose takes only 1000 and 3000-4999 and raises on the rest,
        # so daphne could not send a registered code such as 1013 (try again later, how an
        # overloaded server defers a handshake: devices/consumers.py); the application then
        # died with the socket left open. Registered codes go out as the close frame itself.
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            super().serverClose(code)


def frame_header(opcode: int, length: int) -> bytes:
    """The header of one unmasked, unfragmented websocket frame (RFC 6455 5.2): FIN, the
    opcode, and the payload length in 7, 7+16 or 7+64 bits."""
    if length <= 125:
        return bytes((0x80 | opcode, length))
    if length <= 0xFFFF:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


class LazyFormat:
    """pprint.pformat of an object, computed only if a log line is actually written."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return pprint.pformat(self.obj)

    __repr__ = __str__


def defer_autobahn_debug_formatting() -> None:
    """autobahn pretty-prints its ~30 connection options for a debug line on every new
    websocket, whether debug logging is on or not (about 0.2 ms a socket here: 2 s of the
    event loop in a 10k reconnect storm). Its module's pformat becomes lazy; the one place
    that returns pformat's result as a string (Timings.__str__) keeps the real one."""
    from autobahn.websocket import protocol

    if protocol.pformat is LazyFormat:
        return
    protocol.Timings.__str__ = lambda self: pprint.pformat(self._timings)
    protocol.pformat = LazyFormat


class BatchedLog:
    """A text stream that collects lines and writes them in one call when flushed."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        if self.lines:
            text, self.lines = "".join(self.lines), []
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # a closed or full log must not stop the server
                pass


class LeanServer(Server):
    """daphne's Server with event-driven reaping, a deadline heap for timeouts, and
    write-through TCP connections."""

    def run(self) -> None:
        self._seq = itertools.count()
        self._deadlines: list[tuple[float, int, int, Any]] = []
        self._dirty: set[Any] = set()
        # Every TCP port of this process (daphne's) hands its connections this transport.
        tcp.Port.transport = WriteThroughServer
        WebSocketFactory.protocol = LeanWebSocketProtocol
        defer_autobahn_debug_formatting()
        stream = getattr(self.action_logger, "stream", None)
        if stream is not None:
            # The access log: one line per request and per socket, each a write() syscall on
            # an unbuffered stream (3% of the loop at 10k devices); written once a second.
            self.action_logger.stream = BatchedLog(stream)
            from twisted.internet import reactor

            reactor.callLater(1, self._flush_access_log)
            reactor.addSystemEventTrigger("after", "shutdown", self.action_logger.stream.flush)
        from twisted.internet import reactor

        # On the event loop once it runs (daphne sets the reactor's loop up in super().run()).
        reactor.callLater(0, self._start_serving)
        super().run()

    def _start_serving(self) -> None:
        from django.conf import settings
        from twisted.internet import reactor

        from walle_web.asgi import serving

        serving(asyncio.get_running_loop())
        if settings.WALLE_ROLLOUT_IN_SERVER:
            from releases.worker import RolloutLoop

            self.rollout = RolloutLoop(settings.WALLE_ROLLOUT_INTERVAL)
            self.rollout.start()
            # In the "before" phase the event loop still runs: the step in progress commits
            # and what it publishes is handed to the loop before the process ends.
            reactor.addSystemEventTrigger("before", "shutdown", self.rollout.stop)

    def _flush_access_log(self) -> None:
        from twisted.internet import reactor

        self.action_logger.stream.flush()
        reactor.callLater(1, self._flush_access_log)

    # --- bookkeeping hooks --------------------------------------------------------------

    def protocol_connected(self, protocol) -> None:
        super().protocol_connected(protocol)
        self._schedule_timeout(protocol, time.time())

    def protocol_disconnected(self, protocol) -> None:
        first = "disconnected" not in self.connections.get(protocol, {"disconnected": 0})
        super().protocol_disconnected(protocol)
        if first:
            self._dirty.add(protocol)
            when = self.connections[protocol]["disconnected"] + self.application_close_timeout
            # A little past the limit: daphne's rule is "more than" the close timeout.
            self._push(when + 0.01, _CLOSE, protocol)

    def create_application(self, protocol, scope):
        queue = super().create_application(protocol, scope)
        details = self.connections.get(protocol)
        if details is not None and "application_instance" in details:
            details["application_instance"].add_done_callback(
                lambda _future, p=protocol: self._dirty.add(p)
            )
        return queue

    # --- the two periodic checkers daphne schedules -------------------------------------

    def application_checker(self) -> None:
        """Reap the connections whose application finished or whose socket closed."""
        from twisted.internet import reactor

        dirty, self._dirty = self._dirty, set()
        now = time.time()
        for protocol in dirty:
            self._reap(protocol, now)
        reactor.callLater(1, self.application_checker)

    def timeout_checker(self) -> None:
        """Visit the connections whose next deadline is due."""
        from twisted.internet import reactor

        now = time.time()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, _, kind, protocol = heapq.heappop(heap)
            details = self.connections.get(protocol)
            if details is None:
                continue  # already reaped
            if kind == _CLOSE:
                self._reap(protocol, now)
            elif "disconnected" not in details:
                protocol.check_timeouts()
                self._schedule_timeout(protocol, now)
        reactor.callLater(1, self.timeout_checker)

    def kill_all_applications(self):
        # daphne's version assumes every connection has an application; one still reading
        # its request has none yet.
        for details in self.connections.values():
            details.setdefault("application_instance", _done_future())
        return super().kill_all_applications()

    # --- helpers ------------------------------------------------------------------------

    def _push(self, when: float, kind: int, protocol) -> None:
        heapq.heappush(self._deadlines, (when, next(self._seq), kind, protocol))

    def _schedule_timeout(self, protocol, now: float) -> None:
        when = self._next_deadline(protocol, now)
        if when is not None:
            self._push(max(when + 0.01, now + _MIN_STEP_S), _TIMEOUT, protocol)

    def _next_deadline(self, protocol, now: float) -> float | None:
        """When `check_timeouts` could next do something for this connection, or None."""
        if isinstance(protocol, WebSocketProtocol):
            opened = getattr(protocol, "socket_opened", now)
            if protocol.state == protocol.STATE_CONNECTING:
                # Visited every second while the handshake lasts (a short time), so the
                # ping schedule starts when the socket opens.
                return min(opened + self.websocket_connect_timeout, now + 1)
            due = []
            if protocol.state == protocol.STATE_OPEN:
                due.append(getattr(protocol, "last_ping", now) + self.ping_interval)
            if self.websocket_timeout >= 0:
                due.append(opened + self.websocket_timeout)
            return min(due) if due else None
        if self.http_timeout:
            return getattr(protocol, "request_start", now) + self.http_timeout
        return None

    def _reap(self, protocol, now: float) -> None:
        """daphne's per-connection rule: cancel an application that outlived its closed
        socket too long, report a finished application's exception, forget a connection
        whose socket is closed and whose application is gone."""
        details = self.connections.get(protocol)
        if details is None:
            return
        closed_at = details.get("disconnected")
        app = details.get("application_instance")
        if closed_at and now - closed_at > self.application_close_timeout:
            if app is not None and not app.done():
                logger.warning(
                    "Application instance %r for connection %r took too long to shut down "
                    "and was killed.",
                    app,
                    protocol,
                )
                app.cancel()  # its done-callback marks the connection for the next tick
        if app is not None and app.done():
            if not app.cancelled() and (error := app.exception()) is not None:
                if isinstance(error, KeyboardInterrupt):
                    self.stop()
                else:
                    logger.error("Exception inside application: %s", error, exc_info=error)
                    if not closed_at:
                        protocol.handle_exception(error)
            del details["application_instance"]
            app = None
        if app is None and closed_at:
            del self.connections[protocol]


def _done_future() -> asyncio.Future:
    future = asyncio.get_event_loop().create_future()
    future.set_result(None)
    return future


class LeanCommandLine(CommandLineInterface):
    server_class = LeanServer


def _trace_memory(path: Path) -> None:
    """Benchmarks: SIGUSR1 takes a heap snapshot, SIGUSR2 writes what was allocated since
    and is still alive, by allocation site (bench/idle_socket.py)."""
    import signal
    import tracemalloc

    tracemalloc.start(1)
    before: list = []

    def mark(*_: object) -> None:
        import gc

        gc.collect()
        before[:] = [tracemalloc.take_snapshot()]

    def write(*_: object) -> None:
        import gc

        gc.collect()
        after = tracemalloc.take_snapshot()
        stats = after.compare_to(before[0], "lineno") if before else after.statistics("lineno")
        lines = [f"{s.size_diff} {s.count_diff} {s.traceback[0]}" for s in stats if s.size_diff]
        path.write_text("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR1, mark)
    signal.signal(signal.SIGUSR2, write)


def main(argv: list[str] | None = None) -> None:
    # The event loop releases the GIL for every socket call (send, accept, getsockname, close);
    # getting it back waits for whichever thread holds it (the ingest writer's ORM work, the
    # rollout loop) to reach the switch interval. At the default 5 ms that wait was about
    # half of the loop's time in a 10k reconnect storm (bench/README.md); the loop's latency
    # is what devices see, the background threads' throughput hardly moves.
    sys.setswitchinterval(float(os.environ.get("WALLE_SWITCH_INTERVAL_S", "0.0005")))
    if path := os.environ.get("WALLE_PROFILE_SAMPLES"):
        from walle_web.sampler import Sampler

        Sampler(Path(path)).install()  # benchmarks: SIGUSR1 starts, SIGUSR2 writes
    elif path := os.environ.get("WALLE_PROFILE_MEMORY"):
        _trace_memory(Path(path))
    LeanCommandLine().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    # Through the package's module, so there is one LeanServer class (not a __main__ copy).
    from walle_web.serve import main as package_main

    package_main()
