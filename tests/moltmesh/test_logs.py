"""Structured logs: the node's stream has one format, libraries' warnings included, and a request
aiohttp cannot parse is counted and logged without a traceback (moltmesh.logs, api.ServerLog)."""

from __future__ import annotations

import json
import logging

import pytest
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from moltmesh.api import ServerLog
from moltmesh.logs import setup_logging
from moltmesh.metrics import NodeMetrics


@pytest.fixture
def restore_loggers():  # type: ignore[no-untyped-def]
    names = ("moltmesh", "aiohttp", "asyncio")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level,
                 logging.getLogger(n).propagate) for n in names}  # fmt: skip
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_library_warnings_are_json_lines_like_the_nodes(restore_loggers, capsys) -> None:
    setup_logging("info", "json")
    logging.getLogger("aiohttp.server").info("not shown: below warning")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "peer")
    logging.getLogger("asyncio").warning("slow callback")
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [(r["logger"], r["level"]) for r in records] == [
        ("aiohttp.server", "error"),
        ("asyncio", "warning"),
    ]
    assert "ValueError: boom" in records[0]["exc"]


def _bad_requests(metrics: NodeMetrics, status: str) -> float:
    value = metrics.registry.get_sample_value("moltmesh_bad_requests_total", {"status": status})
    return value or 0.0


def test_unparsable_requests_are_counted_without_a_traceback(restore_loggers, capsys) -> None:
    setup_logging("info", "json")
    metrics = NodeMetrics()
    server_log = ServerLog(metrics)
    for exc in (BadHttpMessage("Content-Length too big"), LineTooLong("header", "8190")):
        server_log.exception("Error handling request from %s", "10.0.0.9", exc_info=exc)
    server_log.debug("Error handling request from %s", "10.0.0.9", exc_info=BadHttpMessage("x"))
    assert _bad_requests(metrics, "400") == 3
    assert capsys.readouterr().err == ""  # debug lines only, below the node's level
    try:
        raise RuntimeError("a real bug")
    except RuntimeError as e:
        server_log.exception("Error handling request from %s", "10.0.0.9", exc_info=e)
    (record,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert record["logger"] == "moltmesh.api.server" and "a real bug" in record["exc"]
    assert _bad_requests(metrics, "400") == 3
