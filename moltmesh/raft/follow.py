"""The follow stream: how a node that is not a Raft group member keeps a copy of committed
state, and how a member serves it.

- **Following** (``FollowStream.run``): one FOLLOW request at a time to one voter or learner,
  from the index after the local copy's: the answer carries the committed entries after it, or,
  when the member has compacted them, one chunk of its stored KV snapshot. Chunks each fit one
  mesh frame; the snapshot is installed only whole and checked (size and SHA-256, then the KV's
  own seal in ``KvStore.restore``). A stream cut short or corrupt is refused, counted
  (``stats``) and started over. A member that does not answer is dropped from the hints and
  another one is asked.
- **Serving** (``FollowStream.answer``): a member waits up to ``FOLLOW_POLL_S`` for entries
  after the requested index (a long poll), then answers with what it has applied, or with the
  chunk of its stored snapshot the follower asks for (the stored snapshot does not change while
  it is sent, unlike the live store).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from consensus.errors import DecodeError, StorageError
from consensus.kv import KvStore
from consensus.raft_snapshot import SnapshotCorruptError, SnapshotDownload
from moltmesh.raft.driver import RaftDriver
from moltmesh.raft.proto import KvOp, KvReply, KvRequest, KvStatus

log = logging.getLogger("moltmesh.raft.follow")

FOLLOW_POLL_S = 1.0
"""How long a member holds a FOLLOW request that has nothing new yet."""
STRANDED_AFTER_S = 5.0
"""A member that heard no leader this long asks another member whether it is still one."""


@dataclass
class FollowStats:
    """What this node's KV service sent and received in pieces (``/v1/raft/status``,
    ``/metrics``)."""

    snapshot_chunks: int = 0  # FOLLOW snapshot chunks received
    snapshots_installed: int = 0  # followed snapshots installed whole and checked
    snapshots_refused: int = 0  # followed snapshots refused: cut short, too long or corrupt
    last_refusal: str = ""
    raft_batches: int = 0  # RAFT envelopes sent (several per Ready when they would not fit one)
    oversize_dropped: int = 0  # a single message or answer too large for any frame: not sent
    busy_refused: int = 0  # requests of a peer refused: it had too many in flight here


Call = Callable[[str, KvRequest, float], Awaitable[KvReply]]


class FollowStream:
    """Both ends of the follow stream for one node (see the module docstring).

    ``call(dst, request, timeout)`` sends a KV request and awaits its reply (``TimeoutError``);
    ``pick_member()`` names a member to follow from (``None``: none known); ``on_reply`` sees
    every reply (leader and member hints); ``forget(member)`` drops a member that did not
    answer from the hints. ``chunk_bytes()`` is the current size of one chunk or entry batch.
    """

    def __init__(
        self,
        driver: RaftDriver,
        stats: FollowStats,
        call: Call,
        pick_member: Callable[[], str | None],
        on_reply: Callable[[KvReply], None],
        forget: Callable[[str], None],
        chunk_bytes: Callable[[], int],
    ) -> None:
        self.driver = driver
        self.stats = stats
        self._call = call
        self._pick_member = pick_member
        self._on_reply = on_reply
        self._forget = forget
        self._chunk_bytes = chunk_bytes
        self.kv = KvStore(retain=driver.kv.retain)  # same history as the members keep
        self.changed = asyncio.Event()
        """Set (and replaced) whenever the followed copy changes."""
        self._download: SnapshotDownload | None = None
        self._target: str | None = None
        self._served_sha: tuple[int, int, bytes] = (0, 0, b"")  # (index, size, sha256)

    # --- following (non-members) ---------------------------------------------------------------

    async def run(self) -> None:
        """Follow committed state for as long as this node is not a group member. A member
        that hears no leader for ``STRANDED_AFTER_S`` asks a member whether the group still
        lists it (``check_membership``)."""
        loop = asyncio.get_running_loop()
        leader_seen = loop.time()
        while True:
            d = self.driver
            if d.is_member():
                now = loop.time()
                if d.leader() is not None:
                    leader_seen = now
                elif now - leader_seen >= STRANDED_AFTER_S:
                    leader_seen = now  # one look per period
                    await self.check_membership()
                await asyncio.sleep(0.5)
                continue
            # One member at a time: a snapshot in chunks must come from one member's copy.
            target = self._target or self._pick_member()
            if target is None:
                await asyncio.sleep(0.5)
                continue
            dl = self._download
            req = KvRequest(0, KvOp.FOLLOW, from_index=self.kv.applied_index + 1,
                            timeout_ms=int(FOLLOW_POLL_S * 1000),
                            snapshot_index=dl.index if dl else 0,
                            snapshot_offset=len(dl.data) if dl else 0)  # fmt: skip
            try:
                reply = await self._call(target, req, FOLLOW_POLL_S + 2.0)
            except TimeoutError:
                self._forget(target)
                self._target = None
                await asyncio.sleep(0.2)
                continue
            self._on_reply(reply)
            if reply.status is not KvStatus.OK:
                self._target = None
                await asyncio.sleep(0.2)
                continue
            self._target = target
            self.take(reply)

    async def check_membership(self) -> None:
        """Ask a member for its view of the group; when its applied state is newer than ours
        and does not list this node, ``RaftDriver.mark_removed``."""
        d = self.driver
        target = self._pick_member()
        if target is None:
            return
        req = KvRequest(0, KvOp.FOLLOW, from_index=d.kv.applied_index + 1, timeout_ms=100)
        try:
            reply = await self._call(target, req, 2.0)
        except TimeoutError:
            return
        self._on_reply(reply)
        if (
            reply.status is KvStatus.OK
            and reply.members
            and d.node_id not in reply.members
            and reply.applied > d.kv.applied_index
        ):
            d.mark_removed(f"{target} applied {reply.applied} and lists {list(reply.members)}")

    def take(self, reply: KvReply) -> None:
        """Add a FOLLOW reply (a snapshot chunk and/or entries) to the followed copy."""
        changed = False
        if reply.snapshot_size:
            changed = self._take_snapshot_chunk(reply)
        for e in reply.entries:
            if e.index == self.kv.applied_index + 1:
                self.kv.apply_entry(e)
                changed = True
        if changed:
            ev, self.changed = self.changed, asyncio.Event()
            ev.set()

    def _take_snapshot_chunk(self, reply: KvReply) -> bool:
        """Add a snapshot chunk; True when it completed a checked snapshot, now installed as
        the followed copy. A refused stream is dropped and counted; the next request starts
        it over."""
        self.stats.snapshot_chunks += 1
        label = (reply.snapshot_index, reply.snapshot_size, reply.snapshot_sha256)
        dl = self._download
        if reply.snapshot_offset == 0:
            dl = self._download = SnapshotDownload(*label)
        elif dl is None or not dl.same(*label):
            self._download = None  # the middle of a snapshot we do not hold: start over
            return False
        try:
            if not dl.take(reply.snapshot_offset, reply.snapshot):
                return False
            store = KvStore.restore(bytes(dl.data))
        except (SnapshotCorruptError, DecodeError) as e:
            self._download = None
            self.stats.snapshots_refused += 1
            self.stats.last_refusal = f"from {self._target}: {e}"
            log.warning("followed snapshot refused, asking again: %s", self.stats.last_refusal)
            return False
        self._download = None
        if store.applied_index < self.kv.applied_index:
            return False  # older than what we hold already
        self.kv = store
        self.stats.snapshots_installed += 1
        return True

    # --- serving (members) ---------------------------------------------------------------------

    async def answer(self, req: KvRequest, members: tuple[str, ...]) -> KvReply:
        """A member's answer to a FOLLOW request: entries after ``req.from_index`` (waiting up
        to ``FOLLOW_POLL_S`` for some), or a chunk of the stored snapshot when they are
        compacted."""
        d = self.driver
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(req.timeout_ms / 1000, FOLLOW_POLL_S)):
                while d.kv.applied_index < req.from_index:
                    await d.applied_event().wait()
        applied = d.kv.applied_index
        common = dict(leader=d.leader(), members=members, applied=applied)
        if req.from_index > applied:
            return KvReply(req.id, KvStatus.OK, **common)  # type: ignore[arg-type]
        if req.from_index < d.storage.first_index():
            return self._snapshot_chunk(req, common)
        entries = d.storage.entries(req.from_index, applied + 1, max_bytes=self._chunk_bytes())
        return KvReply(req.id, KvStatus.OK, entries=tuple(entries), **common)  # type: ignore[arg-type]

    def _snapshot_chunk(self, req: KvRequest, common: dict[str, object]) -> KvReply:
        """The chunk of our stored snapshot the follower asks for (from 0 when it was
        receiving another one). A newer snapshot replacing it makes the follower start over."""
        try:
            snap = self.driver.storage.snapshot()
        except StorageError as e:
            return KvReply(req.id, KvStatus.UNAVAILABLE, f"no snapshot to send: {e}")
        index, data = snap.meta.index, snap.data
        if self._served_sha[:2] != (index, len(data)):
            self._served_sha = (index, len(data), hashlib.sha256(data).digest())
        offset = req.snapshot_offset if req.snapshot_index == index else 0
        offset = min(offset, len(data))
        chunk = data[offset : offset + self._chunk_bytes()]
        return KvReply(req.id, KvStatus.OK, snapshot=chunk, snapshot_index=index,
                       snapshot_offset=offset, snapshot_size=len(data),
                       snapshot_sha256=self._served_sha[2], **common)  # type: ignore[arg-type]  # fmt: skip
