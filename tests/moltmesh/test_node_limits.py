"""What a node does against running out of descriptors and against slow clients (review9 H2, M2).

- At start it raises its soft RLIMIT_NOFILE to the hard limit (never lowers it).
- Its HTTP API closes connections that do not deliver a complete request within the header
  timeout, idle keep-alive connections after the keep-alive timeout, and refuses connections
  beyond its cap, while a normal client keeps being served.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from moltmesh.config import NodeConfig
from moltmesh.node import Node, raise_open_files_limit

NOFILE = resource.RLIMIT_NOFILE


@pytest.fixture
def lowered_nofile() -> Iterator[tuple[int, int]]:
    """The soft RLIMIT_NOFILE lowered below the hard limit for the test (restored after)."""
    soft, hard = resource.getrlimit(NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 512:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} leaves no room to lower the soft one")
    low = 400 if hard == resource.RLIM_INFINITY else min(hard - 1, 4095)
    resource.setrlimit(NOFILE, (low, hard))
    try:
        yield low, hard
    finally:
        resource.setrlimit(NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_one(lowered_nofile):
    low, hard = lowered_nofile
    got = raise_open_files_limit()
    assert got == resource.getrlimit(NOFILE)[0]
    assert got is not None and got > low
    if hard != resource.RLIM_INFINITY:
        assert got == hard


def test_it_never_lowers_and_tolerates_a_refusal(lowered_nofile, monkeypatch):
    low, _ = lowered_nofile

    def refuse(*args: object) -> None:
        raise ValueError("not allowed here")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert raise_open_files_limit() == low  # refused: unchanged, no error
    monkeypatch.undo()
    assert raise_open_files_limit() != low
    raised = resource.getrlimit(NOFILE)[0]
    assert raise_open_files_limit() == raised  # already at the hard limit: unchanged


async def test_a_starting_node_raises_the_limit_and_logs_it(
    lowered_nofile, tmp_path: Path, caplog
) -> None:
    low, _ = lowered_nofile
    config = NodeConfig(data_dir=tmp_path / "data")
    config.runtime.bundled_models = False
    with caplog.at_level(logging.INFO, logger="moltmesh.node"):
        async with Node(config, serve_api=False):
            assert resource.getrlimit(NOFILE)[0] > low
    (started,) = [r for r in caplog.records if r.getMessage() == "node.started"]
    fields = started.__dict__["moltmesh_fields"]
    assert fields["open_files_limit_was"] == low
    assert fields["open_files_limit"] == resource.getrlimit(NOFILE)[0]


# --- the HTTP API against slow and idle clients (M2) ----------------------------------------


def _api_config(tmp_path: Path) -> NodeConfig:
    config = NodeConfig(data_dir=tmp_path / "data")
    config.runtime.bundled_models = False
    config.api.port = 0
    return config


async def _connect(node: Node) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert node.api_url is not None
    host, port = node.api_url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection."""
    out = b""
    try:
        while chunk := await reader.read(4096):
            out += chunk
    except ConnectionResetError:
        pass
    return out


async def _dribble(writer: asyncio.StreamWriter, stop: asyncio.Event) -> int:
    """Send a request head one byte at a time, never finishing it; returns bytes sent."""
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    sent = 0
    for byte in head:
        if stop.is_set():
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        sent += 1
        await asyncio.sleep(0.05)
    return sent


async def test_dribbling_clients_are_closed_while_a_normal_client_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _api_config(tmp_path)
    config.api.idle_timeout_s = 0.5  # the deadline for a request's head too
    async with Node(config) as node:
        conns = [await _connect(node) for _ in range(6)]
        stop = asyncio.Event()
        dribblers = [asyncio.create_task(_dribble(w, stop)) for _, w in conns]
        served = 0
        async with aiohttp.ClientSession() as http:
            closing = asyncio.gather(*(_closed_by_server(r) for r, _ in conns))
            async with asyncio.timeout(20):  # (the old default kept them for an hour)
                while not closing.done():
                    async with http.get(f"{node.api_url}/v2/health/live") as r:
                        assert r.status == 200
                    served += 1
                    await asyncio.sleep(0.02)
            answers = await closing
        stop.set()
        sent = await asyncio.gather(*dribblers)
        for _, w in conns:
            w.close()
        assert answers == [b""] * len(conns)  # closed without an answer: no request came
        assert all(n > 3 for n in sent)  # they were dribbling when closed
        assert served > 0


async def test_idle_keepalive_connections_are_closed(tmp_path: Path, monkeypatch) -> None:
    config = _api_config(tmp_path)
    config.api.idle_timeout_s = 0.3
    async with Node(config) as node:
        reader, writer = await _connect(node)
        writer.write(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(20):
            answer = await _closed_by_server(reader)  # answered, then closed when idle
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200") and b'"live": true' in answer


async def test_connections_over_the_cap_are_refused_with_503(tmp_path: Path, monkeypatch) -> None:
    config = _api_config(tmp_path)
    config.api.max_connections = 4
    config.api.idle_timeout_s = 60.0  # the holders stay
    async with Node(config) as node:
        listener = node._listener
        assert listener is not None and listener.max_connections == 4
        held = [await _connect(node) for _ in range(4)]
        async with asyncio.timeout(10):
            while listener.connections < 4:
                await asyncio.sleep(0.005)
        reader, writer = await _connect(node)
        async with asyncio.timeout(10):
            answer = await _closed_by_server(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
        assert listener.refused == 1
        _, w = held.pop()
        w.close()
        async with asyncio.timeout(10):
            while listener.connections >= 4:
                await asyncio.sleep(0.005)
        async with (
            aiohttp.ClientSession() as http,  # a slot freed: served again
            http.get(f"{node.api_url}/v2/health/live") as r,
        ):
            assert r.status == 200
        for _, w in held:
            w.close()
