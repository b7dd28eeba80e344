"""What a client can do to the API below the routes: a request aiohttp cannot parse is a 400
that is counted and logged without a traceback; a body dribbled slower than the body deadline
gets 408 and the connection closes (it must not hold a connection and a queue slot forever)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from moltmesh import Node
from tests.moltmesh.serving import serving_node


@pytest.fixture
async def node(tmp_path: Path, model_repo: Path) -> AsyncIterator[Node]:
    async with serving_node(tmp_path / "data", model_repo) as n:
        yield n


async def bad_requests(node: Node, status: str) -> float:
    auth = {"Authorization": f"Bearer {node.api_token}"}
    async with aiohttp.ClientSession() as s, s.get(node.api_url + "/metrics", headers=auth) as r:
        for line in (await r.text()).splitlines():
            if line.startswith(f'moltmesh_bad_requests_total{{status="{status}"}}'):
                return float(line.split()[-1])
    return 0.0


async def raw_exchange(node: Node, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the node answers until it closes."""
    host, port = node.api_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


MALFORMED = [
    b"GET /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    b"POST /v2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]


async def test_unparsable_requests_are_400s_counted_without_tracebacks(node, caplog) -> None:
    before = await bad_requests(node, "400")
    with caplog.at_level(logging.DEBUG):
        for data in MALFORMED:
            answer = await raw_exchange(node, data)
            assert answer.split(b" ", 2)[1] == b"400", (data[:60], answer[:80])
    assert await bad_requests(node, "400") == before + len(MALFORMED)
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]
    assert tracebacks == []
    assert sum(r.getMessage() == "api.bad_http" for r in caplog.records) == len(MALFORMED)


def limits(seconds: float, rate: int):  # type: ignore[no-untyped-def]
    def configure(config) -> None:  # type: ignore[no-untyped-def]
        config.api.body_timeout_s, config.api.min_body_rate = seconds, rate

    return configure


async def test_a_dribbled_body_gets_408_and_the_connection_closes(tmp_path, model_repo) -> None:
    async with serving_node(tmp_path / "d", model_repo, limits(0.3, 10**9)) as node:
        await dribble_a_body(node)


async def dribble_a_body(node: Node) -> None:
    before = await bad_requests(node, "408")
    head = (
        "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {node.api_token}\r\nContent-Length: 4000\r\n\r\n"
    ).encode()
    answer = await raw_exchange(node, head + b'{"inputs": [')  # and nothing more
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert b'"error": "the request body did not arrive within 0.3 s"' in answer
    assert await bad_requests(node, "408") == before + 1


async def test_a_large_body_on_a_slow_but_steady_link_is_not_cut(tmp_path, model_repo) -> None:
    """The deadline grows with the declared length (``api.min_body_rate``): a client on a slow
    link sending a big request is served, not answered 408 after a fixed time."""
    async with serving_node(tmp_path / "d", model_repo, limits(0.2, 10_000)) as node:
        await send_slowly(node)  # 20 kB may take 0.2 + 2 s


async def send_slowly(node: Node) -> None:
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}'
    body += b" " * (20_000 - len(body))  # JSON whitespace: the size of a bigger request
    head = (
        "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {node.api_token}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    host, port = node.api_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    for i in range(0, len(body), 2_000):  # 20 kB/s: slower than 0.2 s allows in one go
        writer.write(body[i : i + 2_000])
        await writer.drain()
        await asyncio.sleep(0.1)  # (the link's pace, not a wait for the node)
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert answer.split(b" ", 2)[1] != b"408", answer[:200]
