"""Without a running Raft the KV routes answer 503 with why: not part of a mesh, Raft still
starting (a node that just started says it is ready before its Raft runs), or stopping."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from moltmesh.api import api_middleware
from moltmesh.metrics import NodeMetrics
from moltmesh.raft.http import RaftRef, add_raft_routes


@pytest.mark.parametrize(
    ("state", "says"),
    [("absent", "not part of a mesh"), ("starting", "starting"), ("stopping", "stopping")],
)
async def test_the_503_says_why_there_is_no_raft(state: str, says: str) -> None:
    app = web.Application(middlewares=[api_middleware("t" * 20, NodeMetrics())])
    add_raft_routes(app, RaftRef(state=state))
    async with TestClient(TestServer(app)) as client:
        for method, path in (("GET", "/v1/kv/k"), ("PUT", "/v1/kv/k"), ("GET", "/v1/raft/status")):
            r = await client.request(method, path, headers={"Authorization": "Bearer " + "t" * 20})
            assert r.status == 503, (state, method, path)
            assert says in (await r.json())["error"], (state, method, path)
