"""Tasks waiting for a change under a key prefix of the cluster KV.

A watcher of a quiet prefix (the mesh config under ``mesh/``, an app's long-poll) must not cost
anything per write to other keys: under a write load that would be a wake-up, a scan and a new
timer per applied batch, for each watcher. ``ChangeWaiters.notify`` gets the keys the batch
changed and wakes only the waiters whose prefix one of them starts with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


class ChangeWaiters:
    """Futures waiting for a change under a prefix. Single event loop; not thread-safe."""

    def __init__(self) -> None:
        self._waiting: dict[asyncio.Future[None], str] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def wait(self, prefix: str) -> asyncio.Future[None]:
        """A future done at the next ``notify`` that names a change under ``prefix``. A caller
        that stops waiting cancels it (as a timeout around ``await`` does), which unregisters
        it."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[fut] = prefix
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: asyncio.Future[None]) -> None:
        self._waiting.pop(fut, None)

    def notify(self, changed: Sequence[str] | None) -> None:
        """Wake the waiters whose prefix a key in ``changed`` (the keys a batch of changes
        touched, ``KvStore.changed_keys``) starts with; ``None`` (anything may have changed: a
        snapshot replaced the store, or the changes were compacted away) wakes all."""
        if not self._waiting:
            return
        if changed is not None:  # one C-level prefix test per key finds the few that matter
            prefixes = tuple(set(self._waiting.values()))
            keys = [k for k in changed if k.startswith(prefixes)]
            if not keys:
                return
        for fut, prefix in list(self._waiting.items()):
            if fut.done():  # cancelled; its done callback has not run yet
                continue
            if changed is None or any(k.startswith(prefix) for k in keys):
                del self._waiting[fut]
                fut.set_result(None)
