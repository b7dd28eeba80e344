"""A metadata refresh failing with an OS error is one rate-limited warning, not a traceback.

Review9 H2: with the process out of file descriptors, "metadata refresh failed … Errno 24" was
logged with a full traceback every refresh (5 s).
"""

from __future__ import annotations

import errno
import logging

from consensus.swim_messages import Meta
from moltmesh.mesh.meta import Capability, Load, MetaRefresher, build_meta


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refresher(make, clock: _Clock) -> MetaRefresher:  # type: ignore[no-untyped-def]
    base = build_meta("a:1", Capability(tier="light"), Load(0, 0))
    published: list[Meta] = []
    return MetaRefresher(make, published.append, base, 5.0, clock=clock)


def _emfile() -> Meta:
    raise OSError(errno.EMFILE, "Too many open files")


def test_os_errors_log_one_line_with_the_errno_rate_limited(caplog):
    clock = _Clock()
    r = _refresher(_emfile, clock)
    with caplog.at_level(logging.DEBUG, logger="moltmesh.mesh.meta"):
        for _ in range(12):  # FAILURE_LOG_INTERVAL_S (60 s) of failures at the 5 s interval
            r.refresh_logged()
            clock.now += 5.0
        r.refresh_logged()  # 60 s after the first one: logged again, with the count left out
    records = [rec for rec in caplog.records if rec.name == "moltmesh.mesh.meta"]
    assert [rec.getMessage() for rec in records] == ["meta.refresh_failed"] * 2
    assert all(rec.levelno == logging.WARNING and rec.exc_info is None for rec in records)
    first, second = (rec.__dict__["moltmesh_fields"] for rec in records)
    assert first["errno"] == errno.EMFILE and first["not_logged"] == 0
    assert second["not_logged"] == 11
    assert r.failures == 13


def test_a_refresh_that_works_again_publishes(caplog):
    clock = _Clock()
    fail = [True]

    def make() -> Meta:
        if fail[0]:
            raise OSError(errno.EMFILE, "Too many open files")
        return build_meta("a:1", Capability(tier="heavy"), Load(0, 0))

    r = _refresher(make, clock)
    r.refresh_logged()
    fail[0] = False
    r.refresh_logged()
    assert r.published == 1 and r.current.tier == "heavy"


def test_other_errors_keep_their_traceback(caplog):
    r = _refresher(lambda: 1 / 0, _Clock())  # type: ignore[arg-type,return-value]
    with caplog.at_level(logging.DEBUG, logger="moltmesh.mesh.meta"):
        r.refresh_logged()
    (rec,) = [rec for rec in caplog.records if rec.name == "moltmesh.mesh.meta"]
    assert rec.levelno == logging.ERROR and rec.exc_info is not None
