"""Bad input to the cluster KV's HTTP API gets a 4xx with a JSON error that names the problem,
never a 500, a hang or a write proposed anyway; a watch without a key watches every key."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import aiohttp
import pytest

from moltmesh.cli import main
from moltmesh.node import Node
from tests.raft.test_node_kv import config_for

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def api(tmp_path: Path):  # type: ignore[no-untyped-def]
    data = tmp_path / "n"
    assert main(["mesh", "init", "--data-dir", str(data)]) == 0
    config = config_for(data)
    config.api.port = 0
    async with Node(config) as node:
        headers = {"Authorization": f"Bearer {node.api_token}"}
        async with aiohttp.ClientSession(node.api_url, headers=headers) as session:
            await node.kv.put("seed", b"1")  # the group leads and applies
            yield session


BAD = [  # method, path, body, the parameter the error must name
    ("PUT", "/v1/kv/k?timeout=nan", b"v", "timeout"),
    ("PUT", "/v1/kv/k?timeout=-1", b"v", "timeout"),
    ("PUT", "/v1/kv/k?timeout=inf", b"v", "timeout"),
    ("PUT", "/v1/kv/k?timeout=soon", b"v", "timeout"),
    ("PUT", "/v1/kv/k?cas=-1", b"v", "cas"),
    ("PUT", "/v1/kv/k?cas=99999999999999999999999", b"v", "cas"),
    ("PUT", "/v1/kv/k?cas=abc", b"v", "cas"),
    ("DELETE", "/v1/kv/k?timeout=0", b"", "timeout"),
    ("GET", "/v1/kv/k?watch=1&since=-5", b"", "since"),
    ("GET", "/v1/kv/k?watch=1&timeout=nan", b"", "timeout"),
    ("GET", "/v1/kv/k?timeout=1e400", b"", "timeout"),
]


async def test_bad_parameters_are_refused_with_400(api) -> None:
    for method, path, body, names in BAD:
        async with api.request(method, path, data=body) as r:
            assert r.status == 400, (method, path, await r.text())
            assert names in (await r.json())["error"], (method, path)
    async with api.get("/v1/kv/k?consistency=stale") as r:
        assert r.status == 404  # nothing was written by the refused requests


async def test_a_value_over_the_command_limit_is_413_with_the_limit(api) -> None:
    async with api.put("/v1/kv/big", data=b"x" * (1024 * 1024 + 1)) as r:
        assert r.status == 413
        doc = await r.json()
        assert doc["error"] == "too large" and doc["limit_bytes"] == 1024 * 1024


async def test_a_watch_without_a_key_watches_every_key(api) -> None:
    async with api.get("/v1/raft/status") as r:
        since = (await r.json())["kv_revision"] + 1
    watch = asyncio.ensure_future(api.get(f"/v1/kv?watch=1&since={since}&timeout=30"))
    async with api.put("/v1/kv/any/where", data=b"v") as r:
        assert r.status == 200
        rev = (await r.json())["revision"]
    async with await watch as r:
        assert r.status == 200
        assert [(e["key"], e["revision"]) for e in (await r.json())["events"]] == [
            ("any/where", rev)
        ]


async def test_kv_watch_count_stops_at_the_end_of_a_revision(tmp_path: Path) -> None:
    """Writes that reach the leader together share one revision: ``moltmesh kv watch --count``
    never stops in the middle of one (a watcher resuming at revision + 1 would miss the rest)."""
    data = tmp_path / "n"
    assert main(["mesh", "init", "--data-dir", str(data)]) == 0
    config = config_for(data)
    config.api.port = 0
    async with Node(config) as node:
        await node.kv.put("seed", b"1")
        since = node.kv.local.revision + 1
        writes = await asyncio.gather(*(node.kv.put(f"w/{i}", b"v") for i in range(5)))
        assert len({w.revision for w in writes}) == 1  # one entry
        out = io.StringIO()
        argv = ["kv", "watch", "w/", "--prefix", "--since", str(since), "--count", "2",
                "--data-dir", str(data)]  # fmt: skip
        with contextlib.redirect_stdout(out):
            assert await asyncio.to_thread(main, argv) == 0
        events = [json.loads(line) for line in out.getvalue().splitlines()]
        assert sorted(e["key"] for e in events) == [f"w/{i}" for i in range(5)]


async def _bad_requests(api, status: str) -> float:  # type: ignore[no-untyped-def]
    async with api.get("/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(f'moltmesh_bad_requests_total{{status="{status}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_answered_4xx_are_counted_as_bad_requests(api) -> None:
    """A 404, 409 or 413 that a KV handler answers (rather than raises) is counted too."""
    before = {s: await _bad_requests(api, s) for s in ("404", "409", "413")}
    async with api.get("/v1/kv/absent?consistency=stale") as r:
        assert r.status == 404
    async with api.put("/v1/kv/seed?cas=0", data=b"2") as r:  # exists: CAS lost
        assert r.status == 409
    async with api.put("/v1/kv/big", data=b"x" * (1024 * 1024 + 1)) as r:
        assert r.status == 413
    for status, count in before.items():
        assert await _bad_requests(api, status) == count + 1, status


@pytest.mark.parametrize(
    "raw", ["%ff%fe", "a%00b", "tab%09bed", "line%0Afeed", "del%7F", "ok/%C3%28"], ids=repr
)
async def test_keys_that_are_not_utf8_text_are_refused(api, raw: str) -> None:
    """Two raw keys that aiohttp would decode to the same replacement characters must not
    name one stored key: a key is UTF-8 text without control characters, or a 400."""
    for method in ("PUT", "GET", "DELETE"):
        async with api.request(method, f"/v1/kv/{raw}", data=b"v") as r:
            assert r.status == 400, (method, raw, await r.text())
            assert "key" in (await r.json())["error"]
    async with api.put("/v1/kv/caf%C3%A9", data=b"v") as r:  # UTF-8 percent-encoded is fine
        assert r.status == 200
    async with api.get("/v1/kv/café?consistency=stale") as r:
        assert r.status == 200 and (await r.json())["key"] == "café"


async def test_a_watch_answer_is_capped_and_resumes_without_a_gap(api, monkeypatch) -> None:
    """A watch from an old revision answers a page at a time (never the whole history in one
    reply); ``revision`` is where the page is complete, so either way of resuming misses
    nothing."""
    from moltmesh.raft import kvservice

    monkeypatch.setattr(kvservice, "WATCH_MAX_EVENTS", 10)
    written = []
    for i in range(25):
        async with api.put(f"/v1/kv/page/{i}", data=b"v") as r:
            written.append((f"page/{i}", (await r.json())["revision"]))
    since, seen, pages = 0, [], 0
    while len(seen) < len(written):
        async with api.get(f"/v1/kv?watch=1&prefix=page/&since={since}&timeout=5") as r:
            body = await r.json()
        events = body["events"]
        assert 0 < len(events) <= 10 and body["revision"] == events[-1]["revision"]
        seen += [(e["key"], e["revision"]) for e in events]
        since, pages = body["revision"] + 1, pages + 1
    assert seen == written and pages == 3
