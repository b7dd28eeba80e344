"""Hostile or malformed infer requests over real HTTP on loopback: each gets a clear 4xx with a
v2 JSON body ``{"error": ...}``, is counted, and never disturbs other requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from moltmesh import Node, NodeConfig
from tests.moltmesh.serving import serving_node

TINY = "/v2/models/tiny/infer"


@pytest.fixture
async def node(tmp_path: Path, model_repo: Path) -> AsyncIterator[Node]:
    async with serving_node(tmp_path / "data", model_repo) as n:
        yield n


def tiny_input(rows: int = 1, fill: float = 0.5) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": [rows, 3], "data": [fill] * (rows * 3)}


def body_with(parameters_json: str, rows: int = 1) -> bytes:
    """An infer body whose request ``parameters`` are the given raw JSON text (NaN allowed)."""
    inputs = json.dumps(tiny_input(rows))
    return f'{{"inputs":[{inputs}],"parameters":{parameters_json}}}'.encode()


async def post(
    session: aiohttp.ClientSession,
    node: Node,
    body: bytes,
    path: str = TINY,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    h = {"Authorization": f"Bearer {node.api_token}", **(headers or {})}
    async with session.post(node.api_url + path, data=body, headers=h) as r:
        return r.status, await r.read()


async def metrics_text(session: aiohttp.ClientSession, node: Node) -> str:
    headers = {"Authorization": f"Bearer {node.api_token}"}
    async with session.get(node.api_url + "/metrics", headers=headers) as r:
        return (await r.read()).decode()


def error_of(status: int, raw: bytes, expected_status: int = 400) -> str:
    assert status == expected_status, (status, raw[:300])
    message = json.loads(raw)["error"]
    assert isinstance(message, str) and message
    return message


@pytest.mark.parametrize(
    "parameters",
    [
        '{"deadline_ms":NaN}',
        '{"deadline_ms":Infinity}',
        '{"deadline_ms":-Infinity}',
        '{"deadline_ms":1e308}',
        f'{{"deadline_ms":{10**400}}}',
        '{"deadline_ms":86400001}',
        '{"timeout":NaN}',
        '{"timeout":Infinity}',
        f'{{"timeout":{10**400}}}',
        '{"timeout":1e300}',
    ],
)
async def test_non_finite_or_huge_deadline_is_400(node: Node, parameters: str):
    name = "deadline_ms" if "deadline_ms" in parameters else "timeout"
    async with aiohttp.ClientSession() as s:
        status, raw = await post(s, node, body_with(parameters))
        assert name in error_of(status, raw)
        assert 'moltmesh_bad_requests_total{status="400"} 1.0' in await metrics_text(s, node)


async def test_a_day_long_deadline_is_accepted(node: Node):
    async with aiohttp.ClientSession() as s:
        for parameters in ('{"deadline_ms":86400000}', '{"timeout":86400000000}'):
            status, raw = await post(s, node, body_with(parameters))
            assert status == 200, raw


async def test_a_nan_deadline_does_not_fail_the_rest_of_its_batch(node: Node):
    """Requests arriving together are batched; one bad member is refused, the others answered."""
    async with aiohttp.ClientSession() as s:
        bodies = [body_with('{"deadline_ms":NaN}', rows=2)]
        bodies += [body_with('{"deadline_ms":5000}', rows=2) for _ in range(7)]
        results = await asyncio.gather(*(post(s, node, b) for b in bodies))
    assert "deadline_ms" in error_of(*results[0])
    for status, raw in results[1:]:
        assert status == 200, raw
        probs = np.asarray(json.loads(raw)["outputs"][0]["data"], np.float32)
        assert probs.shape == (8,)


def binary_body(header: dict[str, Any], blob: bytes) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(header).encode()
    return raw + blob, {"Inference-Header-Content-Length": str(len(raw))}


@pytest.mark.parametrize(
    "body, expected",
    [
        ("[" * 100_000 + "]" * 100_000, "deep"),
        ('{"inputs":' + "[" * 50_000 + "]" * 50_000 + "}", "deep"),
        (
            '{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[%s]}]}' % ("9" * 5000),
            "JSON",
        ),
        (
            json.dumps({"inputs": [{**tiny_input(), "shape": [1] * 100, "data": [0.5]}]}),
            "dimensions",
        ),
        (
            json.dumps({"inputs": [{**tiny_input(), "shape": [1] * 33, "data": [0.5]}]}),
            "dimensions",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1] * 100, "data": ["a"]}]}
            ),
            "dimensions",
        ),
        (json.dumps({"inputs": [{**tiny_input(), "datatype": ["FP32"]}]}), "datatype"),
        ('{"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"data":["\\ud800"]}]}', "Unicode"),
    ],
    ids=[
        "deep-array",
        "deep-in-object",
        "5000-digit-number",
        "100-dims",
        "33-dims",
        "bytes-100-dims",
        "datatype-list",
        "lone-surrogate",
    ],
)
async def test_bodies_that_used_to_crash_the_parser_are_400(node: Node, body: str, expected: str):
    async with aiohttp.ClientSession() as s:
        status, raw = await post(s, node, body.encode())
        assert expected in error_of(status, raw)
        status, raw = await post(s, node, json.dumps({"inputs": [tiny_input()]}).encode())
        assert status == 200, raw  # the node still serves


@pytest.mark.parametrize("datatype, blob", [("FP32", b"\0" * 4), ("BYTES", b"\1\0\0\0a")])
async def test_binary_tensor_with_too_many_dimensions_is_400(
    node: Node, datatype: str, blob: bytes
):
    header = {
        "inputs": [
            {"name": "x", "datatype": datatype, "shape": [1] * 100,
             "parameters": {"binary_data_size": len(blob)}}
        ]
    }  # fmt: skip
    body, headers = binary_body(header, blob)
    async with aiohttp.ClientSession() as s:
        status, raw = await post(s, node, body, headers=headers)
        assert "dimensions" in error_of(status, raw)


async def test_deep_json_in_a_binary_header_is_400(node: Node):
    header = b'{"inputs":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    headers = {"Inference-Header-Content-Length": str(len(header))}
    async with aiohttp.ClientSession() as s:
        status, raw = await post(s, node, header, headers=headers)
        assert "deep" in error_of(status, raw)


async def test_a_32_dimension_tensor_is_still_parsed(node: Node):
    """The limit refuses only what numpy cannot hold safely; the model then judges the shape."""
    body = json.dumps({"inputs": [{**tiny_input(), "shape": [1] * 32, "data": [0.5]}]})
    async with aiohttp.ClientSession() as s:
        status, raw = await post(s, node, body.encode())
        assert "dimensions" not in error_of(status, raw)


def requests_counted(node: Node, model: str, status: str) -> float:
    labels = {"model": model, "route": "local", "status": status}
    return node.metrics.registry.get_sample_value("moltmesh_requests_total", labels) or 0.0


async def test_unknown_models_share_one_metric_label(node: Node):
    """Model names come from URLs: a client inventing names must not grow the metrics."""
    async with aiohttp.ClientSession() as s:
        for i in range(5):
            status, raw = await post(s, node, b"{}", f"/v2/models/nope{i}/infer")
            assert "nope" in error_of(status, raw, 404)  # the model is checked before the body
            good = json.dumps({"inputs": [tiny_input()]}).encode()
            status, raw = await post(s, node, good, f"/v2/models/nope{i}/infer")
            assert "nope" in error_of(status, raw, 404)
        text = await metrics_text(s, node)
    assert "nope" not in text
    assert requests_counted(node, "unknown", "404") == 10


async def test_errors_before_the_body_is_parsed_are_counted(tmp_path: Path, model_repo: Path):
    config = NodeConfig(data_dir=tmp_path / "data")
    config.api.port = 0
    config.api.max_body_bytes = 1024
    config.runtime.model_repository = [model_repo]
    config.runtime.bundled_models = False
    config.runtime.warmup_runs = 1
    async with Node(config) as n, aiohttp.ClientSession() as s:
        for bad in ("x", "1.5", ""):
            status, raw = await post(s, n, b"{}", headers={"Inference-Header-Content-Length": bad})
            assert "Inference-Header-Content-Length" in error_of(status, raw)
        status, raw = await post(s, n, b" " * 2048)
        assert "1024" in error_of(status, raw, 413)
        assert requests_counted(n, "tiny", "400") == 3
        assert requests_counted(n, "tiny", "413") == 1
        seconds = n.metrics.registry.get_sample_value(
            "moltmesh_request_seconds_count", {"model": "tiny"}
        )
        assert seconds == 4
