"""A small HTTP/1.1 server on anyio streams, with h11 doing all the parsing.

It runs inside the caller's task group (the daemon's, the simulator's, a
test's), so it stops when they stop and never fights over signal handlers.
The simulator, the demo's alert receiver, the test receivers and the status
page all serve through it. h11 comes with httpx, so it costs no extra
dependency.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import anyio
import anyio.abc
import h11

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
IDLE_TIMEOUT = 30.0


@dataclass
class Request:
    method: str
    target: str  # raw request target as it arrived: path?query
    headers: dict[str, str]  # lower-case names; the last value wins
    body: bytes = b""
    client: tuple[str, int] | None = None

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A body sent piece by piece (for slow-answer tests); replaces ``body``.
    stream: Callable[[], AsyncIterator[bytes]] | None = None

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
        import json

        return cls(
            status,
            json.dumps(data, ensure_ascii=False).encode("utf-8"),
            [("Content-Type", "application/json"), *(headers or [])],
        )

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Response:
        return cls(status, text.encode("utf-8"), [("Content-Type", content_type)])


class Abort(Exception):
    """Raised by a handler to drop the connection without answering (reset by peer)."""


Handler = Callable[[Request], Awaitable[Response]]


class HttpServer:
    """Serve ``handler`` on host:port (port 0 picks a free one; see ``.port``)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0):
        self.handler = handler
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def serve(self, *, task_status: anyio.abc.TaskStatus[HttpServer] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port, reuse_port=False)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started(self)
        async with listener:
            await listener.serve(self._connection)

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                client = stream.extra(anyio.abc.SocketAttribute.remote_address)
            except Exception:
                client = None
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
            try:
                while True:
                    request = await self._read_request(stream, conn, client)
                    if request is None:
                        return
                    try:
                        response = await self.handler(request)
                    except Abort:
                        _reset(stream)
                        return
                    except Exception:
                        log.exception("HTTP handler failed for %s %s", request.method, request.path)
                        response = Response.text("internal error\n", 500)
                    await self._write_response(stream, conn, response)
                    if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                        return
                    try:
                        conn.start_next_cycle()
                    except h11.LocalProtocolError:
                        return
            except (
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                anyio.EndOfStream,
                ConnectionError,
                TimeoutError,
                h11.ProtocolError,
            ):
                return

    async def _read_request(self, stream: anyio.abc.SocketStream, conn: h11.Connection, client: Any) -> Request | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                with anyio.fail_after(IDLE_TIMEOUT):
                    try:
                        data = await stream.receive(65536)
                    except anyio.EndOfStream:
                        data = b""
                conn.receive_data(data)
                if not data and conn.their_state is h11.IDLE:
                    return None
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body.extend(event.data)
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("body too large")
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
                return Request(
                    method=request.method.decode("ascii"),
                    target=request.target.decode("latin-1"),
                    headers=headers,
                    body=bytes(body),
                    client=tuple(client) if client else None,
                )
            elif isinstance(event, (h11.ConnectionClosed, h11.PAUSED)):
                return None

    async def _write_response(self, stream: anyio.abc.SocketStream, conn: h11.Connection, response: Response) -> None:
        headers = [(k, v) for k, v in response.headers]
        names = {k.lower() for k, _ in headers}
        if "date" not in names:
            headers.append(("Date", formatdate(usegmt=True)))
        if response.stream is None and "content-length" not in names:
            headers.append(("Content-Length", str(len(response.body))))
        headers.append(("Server", "modelarts-monitor"))
        await stream.send(conn.send(h11.Response(status_code=response.status, headers=headers)))
        if response.stream is not None:
            async for chunk in response.stream():
                await stream.send(conn.send(h11.Data(data=chunk)))
        elif response.body:
            await stream.send(conn.send(h11.Data(data=response.body)))
        await stream.send(conn.send(h11.EndOfMessage()))


def _reset(stream: anyio.abc.SocketStream) -> None:
    """Close with RST instead of FIN, as a crashed proxy would."""
    try:
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except Exception:
        pass
