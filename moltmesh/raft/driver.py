"""The Raft driver: runs one ``RaftNode`` over a ``DiskStorage`` and a ``KvStore``.

Contract order for every ``Ready`` (``consensus.raft_types.Ready``): hand the leader's early
messages (``Ready.early``: appends and heartbeats, thesis §10.2.1) to the transport, which
writes them at once, so followers receive and fsync them while this node fsyncs; install a
snapshot (restored into a new KV store first: a snapshot that does not restore is refused before
anything of it reaches the disk), then persist the hard state and entries with ONE write and ONE
fsync (none when only
the commit index changed, see ``DiskStorage.save``), then hand the other messages (votes,
acknowledgements) to the transport, then apply committed entries to the KV machine, then answer
reads, then ``advance`` (which is when the leader counts its own entries toward commit).
On a leader, committed entries below the Ready's new entries are already durable here: they
are applied before the write (their clients do not wait for the next batch's fsync); only the
committed entries among the Ready's own wait for it. A follower applies after its
acknowledgement leaves (the leader's next commit waits for it; nobody waits for the apply).
A leader's Ready that only commits (no entries) applies and wakes its clients before its
messages are written (they follow in a callback queued behind the clients' wake-ups, still ahead
of the next Ready). Everything that arrived since the last Ready (messages, proposals, ticks)
goes out in the next one: batching falls out of the loop (one append per follower and one
fsync cover every proposal made meanwhile), and the KV commands proposed in one turn of the
loop share one ``Batch`` entry while their keys are distinct (``_flush_proposals``: one log
record, one entry to send, decode and apply per group). The fsync runs on this loop's thread:
handing it to a thread of its own was measured slower (the thread waits for the GIL to come
back from each fsync while the loop runs: 7.8k against 13k commits/s in bench/raft_mesh's load).

Outcomes of a proposal (what the HTTP layer maps to status codes):

- the KV result (``Ok``/``CasFailed``/``Rejected``) once its entry is applied here;
- ``Unavailable`` (503: not applied): no leader within the deadline, or another entry was
  committed at its index (it can never commit);
- ``OutcomeUnknown`` (504): the deadline passed after the proposal entered the log.

Linearizable reads use ReadIndex (``read_barrier``): once it returns, the local ``kv`` reflects
every write acknowledged before the read began.

A Ready that cannot be handled (the disk refuses a write or an fsync, a bug) stops the driver
for good: Raft cannot go on from a Ready half handled. ``failure`` then holds the error (and
``status()["failed"]`` says it), the error is logged once (``raft.driver_failed``, level
error, with its traceback), every waiting proposal and read fails (``Unavailable`` when its
entry never reached the log, ``OutcomeUnknown`` when it did: it may commit through the others),
every later call fails at once with ``Unavailable``, and ``on_failure(error)`` is called once:
the node marks itself not ready and is restarted (``moltmesh.Node.failure``). What was
acknowledged stays durable: nothing is acknowledged before its fsync returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from consensus.errors import ConfChangeError, DecodeError, LocalProtocolError, NotLeader
from consensus.kv import KvResult, KvStore
from consensus.kv_batch import BATCH_BYTES, entry_data, group_commands
from consensus.kv_types import (
    KV_CODEC,
    MAX_COMMAND_BYTES,
    Batch,
    CompactedRevisionError,
    KvCommand,
)
from consensus.messages import AppendEntries, ConfChange, Entry, Message
from consensus.raft import RaftConfig, RaftNode
from consensus.raft_membership import bootstrap_entries
from consensus.raft_types import ConfChanged, LeaderChanged, ReadIndexFailed, Ready, Role
from moltmesh.logs import _FIELDS, log_event
from moltmesh.raft.compaction import Compactor
from moltmesh.raft.outcomes import (
    FSYNC_BUCKETS,
    Deadlines,
    OutcomeUnknown,
    Stats,
    Unavailable,
    _Proposal,
    now_us,
)
from moltmesh.raft.tasks import cancel_and_wait
from moltmesh.raft.wal import DiskStorage, PendingWrite
from moltmesh.raft.watchers import ChangeWaiters

log = logging.getLogger("moltmesh.raft")

ELECTION_LATE_CHECK_S = 0.002
"""A follower whose election timer is overdue first lets the network run this long."""
# A Batch entry carries at most BATCH_BYTES of commands, or the Raft config's
# max_bytes_per_msg when smaller: an entry is never split across messages, and a batch larger
# than a message could not be sent through the mesh's frame cap.
_BATCH_TYPE = bytes((KV_CODEC.type_id(Batch),))


@dataclass(slots=True)
class _ReadyStep:
    """A Ready between its disk write and the rest (see ``RaftDriver._handle_ready``)."""

    node: RaftNode
    after_apply: bool
    restored: KvStore | None
    write: PendingWrite | None
    applied_early: int = 0
    """How many of the Ready's committed entries were applied before its write."""


class RaftDriver:
    """One node's Raft group member (see the module docstring).

    ``send(dst, messages)`` must not block (the transport queues). ``bootstrap``: found a new
    group with this node as its sole voter when the storage is empty (the ``mesh init`` node).
    """

    def __init__(
        self,
        node_id: str,
        storage: DiskStorage,
        config: RaftConfig,
        send: Callable[[str, list[Message]], None],
        *,
        bootstrap: bool = False,
        snapshot_entries: int = 50_000,
        kv_retain: int = 10_000,
        seed: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.storage = storage
        self.config = config
        self._send = send
        self.snapshot_entries = snapshot_entries
        self.compactor = Compactor(storage, snapshot_entries, self._wake_threadsafe)
        self.stats = Stats()
        storage.fsync_hook = self.stats.observe_fsync
        if bootstrap and self.is_empty():
            entries, hs = bootstrap_entries([node_id])
            storage.save(hs, entries)
            log_event(log, "raft.bootstrapped", node=node_id)
        self._loop: asyncio.AbstractEventLoop | None = None
        if storage.has_snapshot():
            self.kv = KvStore.restore(storage.snapshot().data)
        else:
            self.kv = KvStore(retain=kv_retain)
        self._rng = random.Random(seed)
        self.node = self._new_node()
        self._applied_commands = 0  # KV commands applied by this process (compaction counts)
        self._queued: list[_Proposal] = []  # proposed, not yet in the log (_flush_proposals)
        self._batch_bytes = min(BATCH_BYTES, config.max_bytes_per_msg)
        self._proposals: dict[int, list[_Proposal]] = {}  # log index -> the entry's proposals
        self._deadlines = Deadlines()  # the proposals' deadlines (loop time)
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._read_ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None  # wakes the loop (``_wake_at``)
        self._applied = asyncio.Event()  # set and replaced on every apply
        self.changes = ChangeWaiters()  # woken by the changes each Ready applies
        self._removed = False  # see ``mark_removed``
        self._leader_seen = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_conf_change: Callable[[], None] | None = None
        self.failure: BaseException | None = None
        """The error that stopped the Ready loop for good (see the module docstring)."""
        self.on_failure: Callable[[BaseException], None] | None = None
        """Called once, on the loop, when the driver fails (``failure`` is set by then)."""

    def is_empty(self) -> bool:
        """No Raft state at all: never founded a group, never contacted by a leader."""
        return self.storage.last_index() == 0 and not self.storage.has_snapshot()

    def bootstrap(self) -> bool:
        """Found a new group with this node as its sole voter, now (the storage must be empty
        and no leader must have contacted it); returns whether it did."""
        if not self.is_empty() or self.node.leader_id is not None or self.node.term > 0:
            return False
        entries, hs = bootstrap_entries([self.node_id])
        self.storage.save(hs, entries)
        self.node = self._new_node()
        self._wake.set()
        log_event(log, "raft.bootstrapped", node=self.node_id)
        return True

    def _new_node(self) -> RaftNode:
        """A ``RaftNode`` over the storage as persisted (at start, after a bootstrap, after a
        refused snapshot). KV snapshots are sealed, so unsealed ones are refused."""
        node = RaftNode(self.node_id, (), self.storage, self.config, self._rng, now=now_us(),
                        applied=self.kv.applied_index)  # fmt: skip
        node.snapshot_receiver.require_sealed = True
        return node

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.compactor.start(self.node_id)
        self._task = asyncio.create_task(self._run(), name=f"raft-{self.node_id}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.compactor.stop()
        self._fail_waiting("the node stopped")
        self.storage.close()

    def _fail_waiting(self, why: str) -> None:
        """End every proposal and read still waiting: ``Unavailable`` for those not in the log
        (never applied), ``OutcomeUnknown`` for those in it, ``Unavailable`` for reads."""
        for p in self._queued:
            if not p.future.done():
                p.future.set_exception(Unavailable(f"not applied: {why}"))
        self._queued = []
        for group in self._proposals.values():
            for p in group:
                if not p.future.done():
                    p.future.set_exception(OutcomeUnknown(why))
        self._proposals.clear()
        for f in self._reads.values():
            if not f.done():
                f.set_exception(Unavailable(why))

    def _check_running(self) -> None:
        """Raise ``Unavailable`` once the driver has failed (nothing it is handed would run)."""
        if self.failure is not None:
            raise Unavailable(f"raft stopped on this node: {self.failure!r}")

    # --- inputs ----------------------------------------------------------------

    def step(self, msgs: list[Message]) -> None:
        now = now_us()
        for m in msgs:
            self.node.step(m, now)
        self._wake.set()

    def is_member(self) -> bool:
        """Whether this node takes part in the group: its log's membership lists it, and no
        newer view of the group has shown that it was removed meanwhile (``mark_removed``)."""
        if self._removed:
            return False
        conf = self.node.conf_state
        return self.node_id in conf.voters or self.node_id in conf.learners

    def mark_removed(self, why: str) -> None:
        """A member whose applied state is newer than ours no longer lists this node, though our
        own log still does: it was removed while it was down, and no leader will contact it
        again unless the group adds it back. Until a leader does, it is no member: reads and
        writes go through the group, and the followed copy serves the stale ones."""
        if not self._removed:
            self._removed = True
            log_event(log, "raft.removed", node=self.node_id, why=why, level=logging.WARNING)
            self.changes.notify(None)  # watches read the followed copy from now on

    def leader(self) -> str | None:
        return self.node.leader_id

    async def wait_leader(self, timeout: float) -> str | None:
        """The known leader, waiting up to ``timeout`` s for one; ``None`` if none appeared."""
        if self.node.leader_id is None:
            self._leader_seen.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self.node.leader_id is None:
                        await self._leader_seen.wait()
                        self._leader_seen.clear()
        return self.node.leader_id

    async def propose(
        self, data: bytes, timeout: float, command: KvCommand | None = None
    ) -> KvResult | None:
        """Propose on this node, which must lead (``NotLeader`` otherwise: the caller forwards).
        Returns the KV result once applied; raises ``OutcomeUnknown`` after ``timeout``, and
        ``NotLeader`` if leadership is lost before the proposal enters the log. ``command``:
        the KV command ``data`` encodes, when the caller has it: the entry then applies here
        without being decoded again, and the command may share a ``Batch`` entry with the
        others proposed in the same turn of the loop (they enter the log, in the order they
        were proposed, at the Ready loop's next turn: ``_flush_proposals``).

        No timer per proposal: deadlines wait in one queue that the Ready loop expires (it
        wakes for the earliest; ``outcomes.Deadlines``), so a proposal costs a future and an
        append. Raises at once
        ``LocalProtocolError`` for ``data`` not ``bytes`` or over ``MAX_COMMAND_BYTES`` and
        ``ValueError`` for an encoded ``Batch`` (batches are formed here, from single commands)."""
        return await self.submit(data, timeout, command)

    def submit(
        self, data: bytes, timeout: float, command: KvCommand | None = None
    ) -> asyncio.Future[KvResult | None]:
        """``propose`` without its coroutine (one less per write for a caller that awaits at
        once): raises at the call what ``propose`` raises before its proposal is queued, and
        returns the future that ends as ``propose`` does. Called on the driver's loop."""
        if type(data) is not bytes or len(data) > MAX_COMMAND_BYTES:
            raise LocalProtocolError(f"a proposal is at most {MAX_COMMAND_BYTES} bytes (bytes)")
        if command is None and data[:1] == _BATCH_TYPE:
            raise ValueError("a batch cannot be proposed; propose its commands")
        self._check_running()
        self.node.check_writable()
        self.stats.proposals += 1
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[KvResult | None] = loop.create_future()
        p = _Proposal(0, fut, "", 0, timeout, command, data)
        self._queued.append(p)
        self._deadlines.add(loop.time() + timeout, p)
        self._wake.set()
        return fut

    def _flush_proposals(self) -> None:
        """Put the queued proposals into the log, in their order, grouped into entries by
        ``consensus.kv_batch.group_commands`` (distinct keys per ``Batch``, at most
        ``_batch_bytes`` of commands). Those cancelled or expired meanwhile are left out."""
        queued = [p for p in self._queued if not p.future.done()]
        self._queued = []
        commands = [(p.command, p.data) for p in queued]
        for positions in group_commands(commands, max_bytes=self._batch_bytes):
            self._propose_group([queued[i] for i in positions])

    def _propose_group(self, group: list[_Proposal]) -> None:
        """Propose ``group`` as one entry (a ``Batch`` when it holds more than one). A failure
        is its members' (they never entered the log), never the Ready loop's."""
        node = self.node
        try:
            index = node.propose(entry_data([p.data for p in group]), now_us())
        except Exception as e:  # NotLeader: leadership lost since ``propose`` checked
            self.stats.proposals_failed += len(group)
            if not isinstance(e, NotLeader):
                log.exception("raft: a proposal could not enter the log")
            for p in group:
                p.future.set_exception(NotLeader(node.leader_id) if isinstance(e, NotLeader) else e)
            return
        self.stats.proposal_entries += 1
        term = node.term
        for p in group:
            p.term = term
            p.index = index
        self._track(index, group)

    def _track(self, index: int, group: list[_Proposal]) -> None:
        """Wait for ``index`` to apply with ``group``. Proposals of an earlier term still
        waiting at the same index (this node lost leadership, its log was cut back, and it
        leads again) can never commit there: they fail now (``Unavailable``) instead of
        waiting forever."""
        for old in self._proposals.get(index, ()):
            if not old.future.done():
                self.stats.proposals_failed += 1
                old.future.set_exception(
                    Unavailable(f"not applied: leadership changed (entry {index} proposed again)")
                )
        self._proposals[index] = group

    def _expire_proposals(self) -> float | None:
        """Fail the proposals whose deadline passed (``OutcomeUnknown``); returns the seconds
        until the next deadline (``None``: none pending)."""
        if not self._deadlines:
            return None
        now = asyncio.get_running_loop().time()
        expired, nxt = self._deadlines.pop_expired(now)
        for p in expired:
            self.stats.proposals_failed += 1
            p.future.set_exception(p.unknown())
        return None if nxt is None else nxt - now

    async def propose_conf_change(self, change: ConfChange, timeout: float) -> None:
        """Propose a membership change (leader only) and wait until it is applied here."""
        self._check_running()
        index = self.node.propose_conf_change(change, now_us())
        fut: asyncio.Future[KvResult | None] = asyncio.get_running_loop().create_future()
        group = [_Proposal(self.node.term, fut)]
        self._track(index, group)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise OutcomeUnknown(f"membership change {change} not applied in {timeout} s") from None
        finally:
            if self._proposals.get(index) is group:
                del self._proposals[index]

    async def read_barrier(self, timeout: float) -> int:
        """ReadIndex: wait until the local KV may serve a linearizable read; returns the index
        it reflects. Raises ``Unavailable`` when no leader confirms within ``timeout``."""
        self._check_running()
        self.stats.reads += 1
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._check_running()
                    ctx = f"{self.node_id}/{next(self._read_ids)}".encode()
                    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                    try:
                        self.node.read_index(ctx, now_us())
                    except NotLeader:
                        await self.wait_leader(timeout)
                        continue
                    self._reads[ctx] = fut
                    self._wake.set()
                    try:
                        index = await fut
                    except Unavailable:
                        await asyncio.sleep(0.005)  # leadership changed: retry with the new one
                        continue
                    finally:
                        self._reads.pop(ctx, None)
                    await self.wait_applied(index)
                    return index
        except TimeoutError:
            raise Unavailable(
                f"no quorum: no leader confirmed a read within {timeout} s", self.leader()
            ) from None

    async def wait_applied(self, index: int) -> None:
        while self.kv.applied_index < index:
            await self._applied.wait()

    def applied_event(self) -> asyncio.Event:
        """An event set at the next apply (watchers wait on it)."""
        return self._applied

    def transfer_leadership(self, to: str) -> None:
        self._check_running()
        self.node.transfer_leadership(to, now_us())
        self._wake.set()

    # --- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        """The Ready loop; an error out of it fails the driver (``_failed``)."""
        try:
            await self._loop_readies()
        except Exception as e:
            self._failed(e)

    def _failed(self, error: Exception) -> None:
        """The loop stopped on ``error``: record, log, fail the waiting, tell the owner."""
        self.failure = error
        waiting = [*self._queued, *(p for g in self._proposals.values() for p in g)]
        self.stats.proposals_failed += sum(not p.future.done() for p in waiting)
        n = self.node
        fields = {
            "node": self.node_id,
            "error": repr(error),
            "errno": getattr(error, "errno", None),
            "term": n.term,
            "commit_index": n.commit_index,
            "applied_index": n.applied_index,
        }
        # (the node must be restarted: an error out of a Ready is never retried)
        log.error("raft.driver_failed", exc_info=error, extra={_FIELDS: fields})
        self._fail_waiting(f"raft stopped on this node: {error!r}")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.on_failure is not None:
            try:
                self.on_failure(error)
            except Exception:
                log.exception("raft: the driver's on_failure callback failed")

    async def _loop_readies(self) -> None:
        late_check = False  # an overdue election timer got its one look at the network
        while True:
            self.compactor.poll()  # between Readies: no log write is prepared
            node = self.node  # replaced once by a late ``bootstrap``
            now = now_us()
            deadline = node.next_deadline()
            if deadline is not None and now >= deadline:
                if node.role is not Role.LEADER and not late_check:
                    # This loop may have been stalled (a slow fsync, a busy CPU): read what the
                    # leader sent meanwhile before concluding that it is gone.
                    late_check = True
                    await asyncio.sleep(ELECTION_LATE_CHECK_S)
                    continue
                late_check = False
                node.tick(now)
                deadline = node.next_deadline()
            else:
                late_check = False  # the timer was pushed back meanwhile: a fresh look next time
            if self._queued:
                self._flush_proposals()
            expiry = self._expire_proposals()
            if node.has_ready():
                self._handle_ready(node.ready())  # an error ends the loop: ``_failed``
                await asyncio.sleep(0)  # let the network and clients run between Readies
                continue
            self._wake.clear()
            wait = None if deadline is None else max(0.0, (deadline - now_us()) / 1e6)
            if expiry is not None:
                wait = expiry if wait is None else min(wait, expiry)
            if wait is not None:
                self._wake_at(asyncio.get_running_loop().time() + wait)
            await self._wake.wait()

    def _wake_at(self, when: float) -> None:
        """Have the loop woken at loop time ``when`` at the latest. One timer serves many
        waits: an armed one that fires no later is kept (a follower's election deadline moves
        on with every append; firing early only costs the loop one look), so a wait costs no
        timer of its own."""
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._wake.set()

    def _handle_ready(self, rd: Ready) -> None:
        """Handle ``rd`` in the contract's order (see the module docstring)."""
        if self._removed and self.node.leader_id is not None:
            self._removed = False  # a leader contacts us: the group took us back
            self.changes.notify(None)
        kv, revision, member = self.kv, self.kv.revision, self.is_member()
        step = self._ready_persist(rd)
        if step is None:
            return
        if step.write is not None:
            self.storage.write(step.write)
        self._ready_apply(rd, step)
        if self.changes and (
            self.kv is not kv or self.kv.revision != revision or self.is_member() != member
        ):
            try:
                self._notify_changes(kv, revision, member)
            except Exception:  # watcher bookkeeping must never stop consensus
                log.exception("raft: waking KV watchers failed")

    def _notify_changes(self, before: KvStore, revision: int, was_member: bool) -> None:
        """Wake the watchers of what this Ready changed (``before`` at ``revision``: the
        store as it was). All of them when the store was replaced by a snapshot, when the
        changes were compacted away, or when this node joined or left the group (a watch then
        reads another copy: ``ClusterKv.local``)."""
        if self.kv is not before or self.is_member() != was_member:
            self.changes.notify(None)
            return
        try:
            self.changes.notify(self.kv.changed_keys(revision + 1))
        except CompactedRevisionError:  # a Compact command of this Ready dropped them
            self.changes.notify(None)

    def _ready_persist(self, rd: Ready) -> _ReadyStep | None:
        """Steps 0 and 1 up to the disk write: the leader's early messages, a snapshot
        installed, the write prepared; ``None`` when the Ready was refused (its snapshot did
        not restore)."""
        self.stats.readies += 1
        node = self.node
        restored: KvStore | None = None
        if rd.snapshot is not None:
            try:  # checked and decoded before anything of it is persisted
                restored = KvStore.restore(rd.snapshot.data)
            except DecodeError as e:  # SnapshotCorruptError included
                self._refuse_snapshot(rd, e)
                return None
        # A leader's Ready that only commits (nothing to persist alongside, so nothing for the
        # followers' disks to overlap with) answers its clients first: its messages (the new
        # commit index) are sent by a callback queued after the clients' wake-ups.
        after_apply = (
            bool(rd.committed) and not rd.entries and rd.snapshot is None
            and node.role is Role.LEADER
        )  # fmt: skip
        # 0. a leader's appends leave first: followers persist in parallel with us
        if rd.early and not after_apply:
            self._send_grouped(rd.messages[: rd.early])
        # 1. persist (snapshot, hard state, entries), one fsync
        if rd.snapshot is not None:
            self.compactor.wait()  # the leader's snapshot replaces ours
            self.storage.apply_snapshot(rd.snapshot)
        early = 0
        if rd.snapshot is None and rd.entries and rd.committed and node.role is Role.LEADER:
            # Committed entries this leader already holds durably (below the Ready's new ones)
            # apply now: their clients need not wait for the next batch's fsync. A follower
            # applies after its acknowledgement leaves: the leader's next commit waits for that
            # acknowledgement, and nobody waits for the follower's apply.
            first_new = rd.entries[0].index
            for e in rd.committed:
                if e.index >= first_new:
                    break
                self._apply(e)
                early += 1
        w = self.storage.prepare(rd.hard_state, rd.entries)
        return _ReadyStep(node, after_apply, restored, w, early)

    def _ready_apply(self, rd: Ready, step: _ReadyStep) -> None:
        """Steps 2 to 5, once the write is durable: send, apply, reads, advance."""
        node = step.node
        if step.write is not None:
            self.storage.finish(step.write)
        # 2. send what had to wait for the disk
        if not step.after_apply and len(rd.messages) > rd.early:
            self._send_grouped(rd.messages[rd.early :])
        # 3. apply
        if step.restored is not None:
            self.kv = step.restored
            for index in [i for i in self._proposals if i <= self.kv.applied_index]:
                del self._proposals[index]  # never applied here: they expire (outcome unknown)
        for e in rd.committed[step.applied_early :] if step.applied_early else rd.committed:
            self._apply(e)
        if step.after_apply and rd.messages:
            # Queued behind the wake-ups of the clients just answered (FIFO), still ahead of
            # this loop's next Ready: they run (and propose again) before these are sent.
            asyncio.get_running_loop().call_soon(self._send_commit_notices, rd.messages)
        # 4. reads
        for rs in rd.read_states:
            fut = self._reads.get(rs.context)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
        conf_changed = False
        for ev in rd.events:
            if isinstance(ev, ReadIndexFailed):
                fut = self._reads.get(ev.context)
                if fut is not None and not fut.done():
                    fut.set_exception(Unavailable("leadership changed", ev.leader_hint))
            elif isinstance(ev, LeaderChanged):
                if ev.leader is not None:
                    self._leader_seen.set()
                log_event(log, "raft.leader", node=self.node_id, leader=ev.leader, term=ev.term)
            elif isinstance(ev, ConfChanged):
                conf_changed = True
                log_event(log, "raft.conf", node=self.node_id, voters=list(ev.conf.voters),
                          learners=list(ev.conf.learners), index=ev.index)  # fmt: skip
        # 5. advance
        node.advance(rd)
        if rd.committed or rd.snapshot is not None:
            ev_applied, self._applied = self._applied, asyncio.Event()
            ev_applied.set()
            self.compactor.maybe_start(
                self.node.applied_index, self.node.conf_state, self.kv, self._applied_commands
            )
        if conf_changed and self.on_conf_change is not None:
            self.on_conf_change()

    def _wake_threadsafe(self) -> None:
        """Wake the Ready loop from another thread (a snapshot file is written)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def _refuse_snapshot(self, rd: Ready, error: Exception) -> None:
        """A snapshot handed over whole that does not restore: nothing of this Ready is
        persisted or sent (as if the node had crashed before its fsync, which Raft tolerates),
        and the node is rebuilt from its storage; the leader sends a snapshot again. Counted
        and logged; the driver keeps running."""
        assert rd.snapshot is not None
        self.stats.snapshots_refused += 1
        log_event(log, "raft.snapshot_refused", node=self.node_id, index=rd.snapshot.meta.index,
                  error=str(error), level=logging.ERROR)  # fmt: skip
        self.node = self._new_node()
        self._wake.set()

    def _send_commit_notices(self, messages: list[Message]) -> None:
        """Send a commit-only Ready's messages, once its clients ran: a commit notice (an empty
        append) to a follower that the clients' new proposals will reach in the next Ready
        anyway is dropped, as that append carries the commit index too (one message and one
        acknowledgement less per follower per round under load)."""
        if self._queued:  # the clients just answered proposed again: let their entries count
            self._flush_proposals()
        node = self.node
        self._send_grouped(
            [m for m in messages
             if not (isinstance(m, AppendEntries) and not m.entries and node.append_pending(m.dst))]
        )  # fmt: skip

    def _send_grouped(self, messages: list[Message]) -> None:
        """One transport envelope per destination, messages in their order."""
        by_dst: dict[str, list[Message]] = {}
        for m in messages:
            by_dst.setdefault(m.dst, []).append(m)
        for dst, msgs in by_dst.items():
            self._send(dst, msgs)

    def _apply(self, e: Entry) -> None:
        if e.index <= self.kv.applied_index:
            return  # already reflected by a restored snapshot
        group = self._proposals.pop(e.index, None)
        if group is None or e.term != group[0].term:  # not ours (or nobody waits here)
            self._applied_commands += self.kv.apply_entry_quietly(e)
            for p in group or ():
                if not p.future.done():
                    self.stats.proposals_failed += 1
                    why = f"not applied: leadership changed (entry {e.index} is another's)"
                    p.future.set_exception(Unavailable(why))
            return
        self._applied_commands += len(group)
        if len(group) > 1:  # our own Batch of exactly these commands
            results = self.kv.apply_batch(e.index, [p.command for p in group]).results  # type: ignore[misc]
            for p, result in zip(group, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)
            return
        p = group[0]
        # our own entry (same index and term): the command we encoded into it, if we have it
        cmd = p.command
        result = self.kv.apply_entry(e) if cmd is None else self.kv.apply_command(e.index, cmd)
        if not p.future.done():
            p.future.set_result(result)  # type: ignore[arg-type]

    # --- status ----------------------------------------------------------------

    def status(self) -> dict[str, object]:
        n = self.node
        return {
            "node": self.node_id,
            "role": n.role.value,
            "term": n.term,
            "leader": n.leader_id,
            "commit_index": n.commit_index,
            "applied_index": n.applied_index,
            "last_index": n.last_index,
            "first_index": n.first_index,
            "revision": self.kv.revision,
            "voters": list(n.voters),
            "learners": list(n.learners),
            "member": self.is_member(),
            "is_leader": n.role is Role.LEADER,
            "failed": None if self.failure is None else f"raft driver failed: {self.failure!r}",
        }


__all__ = [
    "FSYNC_BUCKETS",
    "ConfChangeError",
    "OutcomeUnknown",
    "RaftDriver",
    "Stats",
    "Unavailable",
    "now_us",
]
