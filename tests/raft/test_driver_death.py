"""A Raft driver whose Ready handling fails stops for good, visibly (review9 H2).

Before: "raft ready handling failed; stopping the driver" ended the loop's task and nothing
else: proposals waited for their deadline, new ones queued forever, and the node kept
reporting a healthy follower. Now ``failure`` is set, ``status()`` says so, waiting and later
calls fail at once, ``on_failure`` is called once, and what was acknowledged is on disk.
"""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from consensus.kv_types import Put, encode_command
from moltmesh.raft.driver import OutcomeUnknown, RaftDriver, Unavailable
from moltmesh.raft.runtime import raft_config
from moltmesh.raft.wal import DiskStorage
from tests.raft.localnet import eventually


def _driver(tmp_path) -> RaftDriver:  # type: ignore[no-untyped-def]
    storage = DiskStorage.open(tmp_path / "raft")
    return RaftDriver("a", storage, raft_config("local", 2**20), lambda dst, msgs: None,
                      bootstrap=True, seed=1)  # fmt: skip


def _put(key: str, value: bytes) -> tuple[bytes, float, Put]:
    """``propose``'s arguments for a put (5 s deadline)."""
    cmd = Put(key, value)
    return encode_command(cmd), 5.0, cmd


async def test_a_failed_write_stops_the_driver_visibly(tmp_path, monkeypatch, caplog) -> None:
    d = _driver(tmp_path)
    failures: list[BaseException] = []
    d.on_failure = failures.append
    await d.start()
    try:
        await eventually(lambda: d.status()["is_leader"], 5, "the sole voter leads")
        acked = await d.propose(*_put("k", b"acked"))
        assert acked is not None and d.status()["failed"] is None
        write = d.storage.write

        def refuse(w):  # type: ignore[no-untyped-def]
            raise OSError(errno.EMFILE, "Too many open files")

        monkeypatch.setattr(d.storage, "write", refuse)
        with caplog.at_level(logging.ERROR, logger="moltmesh.raft"):
            with pytest.raises(OutcomeUnknown, match="raft stopped"):  # at once, not in 5 s
                await d.propose(*_put("k2", b"lost"))  # (it entered the log: it may have committed)
            await eventually(lambda: d.failure is not None, 5, "the driver failed")
        assert len(failures) == 1 and isinstance(failures[0], OSError)
        assert failures[0].errno == errno.EMFILE
        assert "raft driver failed" in str(d.status()["failed"])
        (rec,) = [r for r in caplog.records if r.getMessage() == "raft.driver_failed"]
        assert rec.levelno == logging.ERROR and rec.exc_info is not None
        assert rec.__dict__["moltmesh_fields"]["errno"] == errno.EMFILE
        with pytest.raises(Unavailable, match="raft stopped"):  # later calls fail at once
            await d.propose(*_put("k3", b"x"))
        with pytest.raises(Unavailable, match="raft stopped"):
            await d.read_barrier(5)
        monkeypatch.setattr(d.storage, "write", write)
    finally:
        await d.stop()
    assert len(failures) == 1
    again = _driver(tmp_path)  # the acknowledged write is durable
    await again.start()
    try:
        await eventually(lambda: again.kv.applied_index >= acked.revision, 5, "replayed")
        assert again.kv.get("k").value == b"acked"  # type: ignore[union-attr]
    finally:
        await again.stop()


async def test_a_stopped_driver_is_not_failed(tmp_path) -> None:
    d = _driver(tmp_path)
    called: list[BaseException] = []
    d.on_failure = called.append
    await d.start()
    await eventually(lambda: d.status()["is_leader"], 5, "the sole voter leads")
    await d.stop()
    await asyncio.sleep(0)
    assert d.failure is None and called == [] and d.status()["failed"] is None
