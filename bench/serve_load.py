"""The client side of ``bench/serve.py``: request bodies, a bounded load loop, in-process timings.

- ``infer_bodies`` builds the v2 infer request for one 32×32 image, binary and JSON, once: the
  load loop then only sends bytes, so the client's own cost stays the same across cells.
- ``run_load`` sends requests from ``clients`` concurrent workers over ONE keep-alive
  ``aiohttp.ClientSession`` until ``requests`` have completed or ``max_seconds`` passed (both
  bounds always apply), and returns per-request latencies. Any non-2xx answer or transport error
  aborts the cell with ``LoadError``: a benchmark of failures measures nothing.
- ``run_lean_load`` does the same with a minimal keep-alive HTTP/1.1 client (``LeanConnection``,
  one per concurrent client, on an ``asyncio.Protocol``): it writes the request as prebuilt bytes
  and reads the status line, the headers and a ``Content-Length`` body, nothing more — a fixed
  cost per request whatever the endpoint, as ``wrk`` does, so that the client's own work does not
  count against the server's overhead.
- ``time_call`` times a synchronous call in-process (the ``session.run`` floor, the codecs).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from moltmesh import v2


class LoadError(RuntimeError):
    """A request failed during a load run; the message says which and how."""


@dataclass(frozen=True)
class Request:
    """One request to replay: method, URL, headers and body (None for GET)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None


@dataclass(frozen=True)
class LoadResult:
    """Latencies in seconds (completion order), the wall time of the run, and the count."""

    latencies: list[float]
    wall_s: float

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        """Completed requests per second over the whole run."""
        return self.count / self.wall_s if self.wall_s > 0 else 0.0


def sample_image(seed: int = 0) -> np.ndarray:
    """One FP32 [1,1,32,32] grey-scale patch in [0, 1] (seeded)."""
    return np.random.default_rng(seed).random((1, 1, 32, 32), dtype=np.float32)


def infer_bodies(image: np.ndarray, token: str, url: str) -> dict[str, Request]:
    """The infer request for ``image`` as ``{"binary": ..., "json": ...}``.

    Binary: tensors both ways via the binary extension (as ``tritonclient`` sends them). JSON:
    input ``data`` as a flat list of numbers, output returned as JSON.
    """
    auth = {"Authorization": f"Bearer {token}"}
    blob = np.ascontiguousarray(image, dtype="<f4").tobytes()
    tensor = {"name": "image", "datatype": "FP32", "shape": list(image.shape)}
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(blob)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    binary = Request(
        "POST",
        url,
        {**auth, "Content-Type": "application/octet-stream", v2.HEADER_LENGTH: str(len(header))},
        header + blob,
    )
    body = json.dumps({"inputs": [{**tensor, "data": image.ravel().tolist()}]}).encode()
    as_json = Request("POST", url, {**auth, "Content-Type": "application/json"}, body)
    return {"binary": binary, "json": as_json}


async def fetch_once(session: aiohttp.ClientSession, req: Request) -> tuple[int, dict, bytes]:
    """Send ``req`` once; returns status, headers and body (for checking an answer)."""
    async with session.request(req.method, req.url, headers=req.headers, data=req.body) as r:
        return r.status, dict(r.headers), await r.read()


async def run_load(
    session: aiohttp.ClientSession,
    req: Request,
    clients: int,
    requests: int,
    max_seconds: float,
) -> LoadResult:
    """Run ``clients`` workers sending ``req`` until ``requests`` are done or time is up."""
    latencies: list[float] = []
    started = time.perf_counter()
    stop_at = started + max_seconds
    issued = 0
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal issued
        while issued < requests and clock() < stop_at:
            issued += 1
            t0 = clock()
            try:
                async with session.request(
                    req.method, req.url, headers=req.headers, data=req.body
                ) as r:
                    await r.read()
                    status = r.status
            except aiohttp.ClientError as e:
                raise LoadError(f"{req.method} {req.url}: {type(e).__name__}: {e}") from e
            if status >= 300:
                raise LoadError(f"{req.method} {req.url}: HTTP {status}")
            latencies.append(clock() - t0)

    await asyncio.gather(*(worker() for _ in range(clients)))
    return LoadResult(latencies, time.perf_counter() - started)


def request_bytes(req: Request) -> bytes:
    """``req`` as the exact HTTP/1.1 bytes to write on a keep-alive connection."""
    url = urlsplit(req.url)
    target = url.path + (f"?{url.query}" if url.query else "")
    lines = [f"{req.method} {target} HTTP/1.1", f"Host: {url.netloc}"]
    lines += [f"{k}: {v}" for k, v in req.headers.items() if k.lower() != "content-length"]
    if req.body is not None:
        lines.append(f"Content-Length: {len(req.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (req.body or b"")


class LeanConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends one request at a time (bench only).

    ``exchange(raw)`` writes ``raw`` and resolves to ``(status, head, body)`` once the answer's
    ``Content-Length`` bytes have arrived; ``head`` is the raw header block. Answers without a
    ``Content-Length`` (chunked, or read to close) raise ``LoadError``: the node never sends them.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None
        self._head_end = -1  # index of the blank line ending the current answer's head
        self._need = 0  # bytes the whole current answer takes (head + body), once known
        self._lost: Exception | None = None

    @classmethod
    async def open(cls, url: str) -> LeanConnection:
        """Connect to the host and port of ``url`` (plain TCP, TCP_NODELAY as asyncio sets)."""
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(cls, parts.hostname, parts.port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = LoadError(f"connection closed by the server ({exc!r})")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        buf = self._buf
        if self._head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head_end = end
            head = bytes(buf[:end])
            length = _content_length(head)
            if length is None:
                waiter.set_exception(LoadError("answer without Content-Length"))
                return
            self._need = end + 4 + length
        if len(buf) < self._need:
            return
        head_end, need = self._head_end, self._need
        head, body = bytes(buf[:head_end]), bytes(buf[head_end + 4 : need])
        del buf[:need]
        self._head_end, self._need = -1, 0
        try:
            status = int(head[9:12])
        except ValueError:
            waiter.set_exception(LoadError(f"bad status line {head[:40]!r}"))
            return
        waiter.set_result((status, head, body))

    async def exchange(self, raw: bytes) -> tuple[int, bytes, bytes]:
        """Send ``raw`` (one whole request) and wait for its answer."""
        if self._lost is not None:
            raise self._lost
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


async def run_lean_load(
    req: Request, clients: int, requests: int, max_seconds: float
) -> LoadResult:
    """``run_load`` with ``LeanConnection``s: one connection per worker, opened before timing."""
    raw = request_bytes(req)
    conns = [await LeanConnection.open(req.url) for _ in range(clients)]
    latencies: list[float] = []
    issued = 0
    clock = time.perf_counter

    async def worker(conn: LeanConnection) -> None:
        nonlocal issued
        while issued < requests and clock() < stop_at:
            issued += 1
            t0 = clock()
            status, _, _ = await conn.exchange(raw)
            if status >= 300:
                raise LoadError(f"{req.method} {req.url}: HTTP {status}")
            latencies.append(clock() - t0)

    started = clock()
    stop_at = started + max_seconds
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return LoadResult(latencies, clock() - started)


def time_call(
    fn: Callable[[], Any], count: int, max_seconds: float, idle_s: float = 0.0
) -> list[float]:
    """Call ``fn`` up to ``count`` times (stopping after ``max_seconds``); durations in seconds.

    ``idle_s`` > 0: the thread sleeps that long before each call (untimed), as a server's loop
    sleeps in epoll between one client's requests, instead of calling back to back.
    """
    out: list[float] = []
    clock = time.perf_counter
    stop_at = clock() + max_seconds
    while len(out) < count and clock() < stop_at:
        if idle_s:
            time.sleep(idle_s)
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out
