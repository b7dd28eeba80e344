"""``moltmesh infer`` against a live in-process node: BYTES inputs from a JSON file, and model
names that must be quoted in the URL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moltmesh import Node
from moltmesh.cli import main
from tests.moltmesh.serving import echo_repository, serving_node


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with serving_node(tmp_path / "data", echo_repository(tmp_path / "repo")) as n:
        yield n


async def run_cli(node: Node, *args: str) -> int:
    argv = ["infer", *args, "--url", node.api_url or "", "--token", node.api_token or ""]
    return await asyncio.to_thread(main, argv)


@pytest.mark.parametrize("encoding", [[], ["--json"]], ids=["binary", "json"])
async def test_bytes_input_from_a_json_file(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str], encoding: list[str]
):
    source = tmp_path / "words.json"
    source.write_text(json.dumps({"s": ["hello", "wörld"]}))
    assert await run_cli(node, "echo", str(source), *encoding) == 0
    out = capsys.readouterr().out
    assert "hello" in out and "wörld" in out and "route local" in out


@pytest.mark.parametrize("name", ["a?b", "a b", "✓"])
async def test_model_names_reach_the_node_quoted(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
):
    source = tmp_path / "x.json"
    source.write_text(json.dumps([[1.0, 2.0, 3.0]]))
    assert await run_cli(node, name, str(source)) == 2
    err = capsys.readouterr().err
    assert "404" in err and name in err


async def test_a_v2_request_body_file_is_answered(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [0] * 6}]}
    source = tmp_path / "request.json"
    source.write_text(json.dumps(body))
    assert await run_cli(node, "tiny", str(source)) == 0
    out = capsys.readouterr().out
    assert "probs" in out and "route local" in out


async def test_an_uncastable_input_is_one_line_naming_file_and_input(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    source = tmp_path / "hello.json"
    source.write_text(json.dumps({"x": "hello"}))
    assert await run_cli(node, "tiny", str(source)) == 2
    err = capsys.readouterr().err
    assert err == f"moltmesh infer: {source}: cannot convert to FP32 for input 'x': it holds text\n"
