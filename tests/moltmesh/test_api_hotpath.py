"""The HTTP API in-process: the one middleware (token, then errors) and the infer route's cached
paths, over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from moltmesh import Node, v2
from moltmesh.client import decode_answer
from tests.models import tiny_reference
from tests.moltmesh.serving import serving_node
from tests.moltmesh.test_node import config_for


@pytest.fixture
async def node(tmp_path: Path, model_repo: Path) -> AsyncIterator[Node]:
    async with serving_node(tmp_path / "data", model_repo) as n:
        yield n


async def get(node: Node, path: str, authorization: str | None) -> tuple[int, bytes]:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with aiohttp.ClientSession() as s, s.get(node.api_url + path, headers=headers) as r:
        return r.status, await r.read()


async def test_token_forms_accepted_and_refused(node: Node):
    token = node.api_token
    for good in (f"Bearer {token}", f"bearer {token}", f"BEARER   {token}  "):
        assert (await get(node, "/v2", good))[0] == 200, good
    for bad in (None, "", token, f"Basic {token}", f"Bearer {token}x", "Bearer"):
        status, body = await get(node, "/v2", bad)
        assert status == 401, bad
        assert "token" in json.loads(body)["error"]
    assert (await get(node, "/v2/health/live", None))[0] == 200
    assert (await get(node, "/v2/health/ready", "Bearer wrong"))[0] == 200
    _, metrics = await get(node, "/metrics", f"Bearer {token}")
    assert 'moltmesh_bad_requests_total{status="401"} 6.0' in metrics.decode()


async def test_errors_after_auth_are_v2_json(node: Node):
    auth = {"Authorization": f"Bearer {node.api_token}"}
    url = node.api_url + "/v2/models/nope/infer"
    async with aiohttp.ClientSession() as s:
        async with s.post(url.replace("nope", "tiny"), data=b"{}", headers=auth) as r:
            assert r.status == 400 and "inputs" in (await r.json())["error"]
        async with s.post(url, data=b"{}", headers=auth) as r:  # the model before the body
            assert r.status == 404 and "nope" in (await r.json())["error"]
        body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3],
                                       "data": [1, 2, 3]}]}).encode()  # fmt: skip
        async with s.post(url, data=body, headers=auth) as r:
            assert r.status == 404 and "nope" in (await r.json())["error"]
        async with s.post(url, data=b"{}", headers={**auth, v2.HEADER_LENGTH: "x"}) as r:
            assert r.status == 400 and v2.HEADER_LENGTH in (await r.json())["error"]


async def test_binary_infer_repeated_answers_each_request(node: Node):
    """The second and later requests reuse the parsed header and the response template."""
    rng = np.random.default_rng(3)
    url = node.api_url + "/v2/models/tiny/infer"
    async with aiohttp.ClientSession() as s:
        for i in range(4):
            x = rng.random((2, 3), dtype=np.float32)
            header = json.dumps(
                {
                    "id": f"req-{i % 2}",
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3],
                                "parameters": {"binary_data_size": x.nbytes}}],
                    "parameters": {"binary_data_output": True},
                }
            ).encode()  # fmt: skip
            headers = {
                "Authorization": f"Bearer {node.api_token}",
                v2.HEADER_LENGTH: str(len(header)),
            }
            async with s.post(url, data=header + x.tobytes(), headers=headers) as r:
                assert r.status == 200, await r.text()
                assert r.content_type == "application/octet-stream"
                body, split = await r.read(), r.headers[v2.HEADER_LENGTH]
            answer = decode_answer(body, split)
            assert json.loads(body[: int(split)])["id"] == f"req-{i % 2}"
            assert answer.parameters["route"] == "local"
            want = tiny_reference(x)
            assert answer.outputs.keys() == want.keys()
            for name, value in want.items():
                np.testing.assert_allclose(answer.outputs[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_over_the_limit_is_413_and_under_it_is_read(
    tmp_path: Path, model_repo: Path, chunked: bool
):
    config = config_for(tmp_path, model_repo)
    config.api.port = 0
    config.api.max_body_bytes = 4096

    def payload(n: int) -> bytes:
        x = np.full((n, 3), 0.5, np.float32)
        return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [n, 3],
                                       "data": x.ravel().tolist()}]}).encode()  # fmt: skip

    async def send(body: bytes):  # chunked: streamed without a Content-Length
        async def chunks():
            for i in range(0, len(body), 1000):
                yield body[i : i + 1000]

        return chunks() if chunked else body

    async with Node(config) as node:
        url = node.api_url + "/v2/models/tiny/infer"
        auth = {"Authorization": f"Bearer {node.api_token}"}
        async with aiohttp.ClientSession() as s:
            big, small = payload(400), payload(10)
            assert len(big) > 4096 > len(small)
            async with s.post(url, data=await send(big), headers=auth) as r:
                assert r.status == 413 and "4096" in (await r.json())["error"]
            async with s.post(url, data=await send(small), headers=auth) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["outputs"][0]["shape"][0] == 10
