"""The client side of ``bench/serve.py``: request bodies, a bounded load loop, in-process timings.

- ``infer_bodies`` builds the v2 infer request for one 32×32 image, binary and JSON, once: the
  load loop then only sends bytes, so the client's own cost stays the same across cells.
- ``run_load`` sends requests from ``clients`` concurrent workers over ONE keep-alive
  ``aiohttp.ClientSession`` until ``requests`` have completed or ``max_seconds`` passed (both
  bounds always apply), and returns per-request latencies. Any non-2xx answer or transport error
  aborts the cell with ``LoadError``: a benchmark of failures measures nothing.
- ``time_call`` times a synchronous call in-process (the ``session.run`` floor, the codecs).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def time_call(fn: Callable[[], Any], count: int, max_seconds: float) -> list[float]:
    """Call ``fn`` up to ``count`` times (stopping after ``max_seconds``); durations in seconds."""
    out: list[float] = []
    clock = time.perf_counter
    stop_at = clock() + max_seconds
    while len(out) < count and clock() < stop_at:
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out
