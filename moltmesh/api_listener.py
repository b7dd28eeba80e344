"""The HTTP API's listening socket, with bounds on what slow or idle clients can hold (review9 M2).

``aiohttp``'s own defaults let a client hold a connection for an hour (``keepalive_timeout``
3630 s) without ever completing a request, and accept connections without limit: 30 clients
dribbling a byte every 5 s, or a thousand idle connections, held their descriptors for good.
Here, with public aiohttp API only (a ``web.Server`` is the protocol factory of
``loop.create_server``, as aiohttp's low-level server documents):

- ``api.idle_timeout_s`` is the runner's ``keepalive_timeout`` (``runner_options``). aiohttp arms
  that timer when a connection is made and again after each response, and closes the connection
  when it fires while no complete request (request line and headers) has arrived: it is both
  the idle keep-alive timeout and the deadline for a request's head. A request being handled is
  never cut by it.
- ``ssl_handshake_timeout`` (API over TLS) is the same bound for the handshake.
- ``api.max_connections``: established connections beyond it are answered ``503`` (JSON,
  ``Connection: close``) and closed at once; ``ApiListener.refused`` counts them, and a warning
  (``api.connections_refused``) is logged at most once per ``REFUSAL_LOG_INTERVAL_S``.

Not bounded here: a client that sends complete headers and then dribbles its body holds the
connection while a handler awaits that body (``request.read()``); the handlers must bound their
body reads themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable

from aiohttp import web

from moltmesh.logs import log_event

log = logging.getLogger("moltmesh.api")

LINGERING_TIME_S = 1.0
"""How long a connection closed with its request body unread (a 408, a 413) still reads what
the client sends, so that it sees the answer rather than a reset (aiohttp's default: 10 s)."""
REFUSAL_LOG_INTERVAL_S = 60.0
_REFUSAL_BODY = json.dumps({"error": "too many connections"}).encode()
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nRetry-After: 1\r\nContent-Length: "
    + str(len(_REFUSAL_BODY)).encode()
    + b"\r\n\r\n"
    + _REFUSAL_BODY
)


def runner_options(idle_timeout_s: float) -> dict[str, object]:
    """The ``web.AppRunner`` keyword arguments that bound idle and slow clients."""
    return {"keepalive_timeout": idle_timeout_s, "lingering_time": LINGERING_TIME_S}


class _Refuse(asyncio.Protocol):
    """A connection over the cap: one 503 answer, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read


class ApiListener:
    """Serves ``runner``'s application on ``host``:``port`` with the bounds of the module
    docstring. ``start`` binds (``OSError`` when it cannot); ``close`` stops accepting (call it
    before ``runner.cleanup()``, which then closes the connections)."""

    def __init__(
        self,
        runner: web.AppRunner,
        *,
        max_connections: int,
        handshake_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if runner.server is None:
            raise RuntimeError("call runner.setup() before making the listener")
        self._web = runner.server
        self.max_connections = max_connections
        self._handshake_timeout_s = handshake_timeout_s
        self.refused = 0
        self._clock = clock
        self._logged_at: float | None = None
        self._unlogged = 0
        self._server: asyncio.AbstractServer | None = None

    @property
    def connections(self) -> int:
        """Established connections now (aiohttp's count)."""
        return len(self._web.connections)

    def __call__(self) -> asyncio.BaseProtocol:
        """The protocol for an accepted connection: aiohttp's, or a refusal over the cap."""
        if len(self._web.connections) < self.max_connections:
            return self._web()
        self.refused += 1
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= REFUSAL_LOG_INTERVAL_S:
            log_event(log, "api.connections_refused", limit=self.max_connections,
                      refused=self.refused, not_logged=self._unlogged,
                      level=logging.WARNING)  # fmt: skip
            self._logged_at, self._unlogged = now, 0
        else:
            self._unlogged += 1
        return _Refuse()

    async def start(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        """Bind and accept; returns the (host, port) bound first."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self, host, port, ssl=ssl_context,
            ssl_handshake_timeout=self._handshake_timeout_s if ssl_context is not None else None,
        )  # fmt: skip
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        """Stop accepting (established connections are the runner's to close)."""
        if self._server is not None:
            self._server.close()
            self._server = None
