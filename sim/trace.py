"""The run's trace: a hash of every delivered event plus a short tail kept for failure reports.

Two runs with the same scenario and seed must give the same ``digest()`` whatever PYTHONHASHSEED
is; the records are ``repr`` strings of plain data (messages are dataclasses), so a divergence in
any delivered message, timer or fault changes the hash.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any

_FLUSH_EVERY = 2048


class Trace:
    """An incremental BLAKE2b over event records, and the last ``tail`` records as text."""

    def __init__(self, tail: int = 64) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self._buf: list[tuple[int, str, tuple[Any, ...]]] = []
        self._tail: deque[tuple[int, str, tuple[Any, ...]]] = deque(maxlen=tail)
        self.records = 0

    def record(self, now: int, kind: str, *parts: Any) -> None:
        """Add one event at virtual time ``now`` (parts are formatted with ``repr``)."""
        self.records += 1
        rec = (now, kind, parts)
        self._tail.append(rec)
        self._buf.append(rec)
        if len(self._buf) >= _FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            # One repr of the whole batch: the same records always give the same text.
            self._hash.update(repr(self._buf).encode())
            self._buf = []

    def digest(self) -> str:
        """Hex digest of everything recorded so far."""
        self._flush()
        return self._hash.hexdigest()

    def tail(self) -> list[str]:
        """The last records, formatted for a human."""
        return [f"{t / 1000:12.3f} ms  {k:<8} {p!r}" for t, k, p in self._tail]
