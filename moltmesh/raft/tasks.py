"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(*tasks: asyncio.Task[object] | None, patience: float = 0.05) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again as needed.

    On Python 3.11 a ``cancel()`` that lands while an ``asyncio.timeout`` block is expiring can
    surface as ``TimeoutError``, which a loop that suppresses timeouts then swallows: one
    cancel is not enough to stop such a loop, so this repeats it every ``patience`` seconds.
    Exceptions of the tasks are retrieved (and dropped): they are stopping."""
    pending = {t for t in tasks if t is not None and not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        done, pending = await asyncio.wait(pending, timeout=patience)
        for t in done:
            if not t.cancelled():
                with contextlib.suppress(BaseException):
                    t.exception()
