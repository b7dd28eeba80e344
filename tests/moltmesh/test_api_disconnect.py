"""Clients that hang up: their requests leave the queue at once (the node cancels the handler),
free their places and slots, and the node goes on serving."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from moltmesh import Node
from tests.moltmesh.test_node import config_for, wait_until

WAITERS = 12


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loops a node runs on (``moltmesh node`` uses uvloop when it is installed)."""
    if name == "uvloop":
        return pytest.importorskip("uvloop").new_event_loop
    return asyncio.new_event_loop


async def send_and_keep_open(node: Node, body: bytes) -> asyncio.StreamWriter:
    """Send a whole infer request on a raw connection and return without reading the answer."""
    host, port = node.api_url.removeprefix("http://").rsplit(":", 1)
    _reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {node.api_token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    return writer


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("max_batch", [1, 8], ids=["unbatched", "batched"])
def test_disconnected_clients_leave_the_queue(
    tmp_path: Path, model_repo: Path, max_batch: int, loop: str
):
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(disconnect_and_serve(tmp_path, model_repo, max_batch))


async def disconnect_and_serve(tmp_path: Path, model_repo: Path, max_batch: int) -> None:
    config = config_for(
        tmp_path, model_repo, max_inflight=1, max_queue=WAITERS, max_batch=max_batch
    )
    config.api.port = 0
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    ).encode()
    async with Node(config) as node:
        service = node.service
        # Hold the only execution slot, as a long run would: every request has to queue.
        assert service._slots.try_take()
        writers = [await send_and_keep_open(node, body) for _ in range(WAITERS)]
        await wait_until(lambda: service.queue_depth == WAITERS)
        for writer in writers:
            writer.close()
        await wait_until(lambda: service.queue_depth == 0, timeout=5.0)
        service._slots.release()
        auth = {"Authorization": f"Bearer {node.api_token}"}
        async with aiohttp.ClientSession() as s:
            async with s.post(node.api_url + "/v2/models/tiny/infer", data=body, headers=auth) as r:
                assert r.status == 200, await r.text()
            async with s.get(node.api_url + "/metrics", headers=auth) as r:
                text = await r.text()
        assert "moltmesh_queue_depth 0.0" in text and "moltmesh_inflight 0.0" in text
        gone = node.metrics.registry.get_sample_value(
            "moltmesh_requests_total", {"model": "tiny", "route": "local", "status": "499"}
        )
        assert gone == WAITERS
        # Every place is free again: a full queue's worth of requests is admitted.
        assert service._slots.try_take()
        writers = [await send_and_keep_open(node, body) for _ in range(WAITERS)]
        await wait_until(lambda: service.queue_depth == WAITERS)
        service._slots.release()
        await wait_until(lambda: service.queue_depth == 0 and service.inflight == 0)
        for writer in writers:
            writer.close()
