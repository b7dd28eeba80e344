"""``ClusterKv``: the cluster KV as every node sees it (``node.kv``), member of the Raft group
or not.

- **Writes** go to the leader: proposed here when this node leads, else sent to the leader (or,
  from a non-member, to a group member, which answers with the leader to ask). A write that
  was never proposed raises ``Unavailable`` (HTTP 503, with the reason); one whose deadline
  passed after it left raises ``OutcomeUnknown`` (HTTP 504).
- **Reads** are linearizable by default: a member runs ReadIndex and reads its own copy; a
  non-member asks a member. ``consistency="stale"`` reads the local copy at once (what a
  partitioned node still serves).
- **Non-members** follow committed state through a watch stream into a local ``KvStore``
  (``moltmesh.raft.follow``: committed entries, or a KV snapshot in checked chunks once they
  are compacted).
- **Frames**: nothing sent is larger than the mesh frame limit (``max_frame_bytes``): Raft
  messages for one peer are split over several batches, and an answer that cannot fit is
  replaced by a ``TOO_LARGE`` refusal (``ReplyTooLarge`` at the caller).
- **Watches** long-poll the local copy from ``since`` (``CompactedRevisionError`` → HTTP 410).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import math
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from consensus.errors import DecodeError, NotLeader
from consensus.fastinit import fast_init
from consensus.kv import KvStore, event_size
from consensus.kv_types import (
    Batch,
    Cas,
    CasFailed,
    Delete,
    Event,
    KeyValue,
    KvCommand,
    Ok,
    Put,
    Rejected,
    decode_command,
    encode_command,
)
from consensus.messages import decode as decode_raft
from consensus.messages import encode as encode_raft
from consensus.raft_types import Role
from moltmesh.mesh.drops import DropCounters, DropReason, Transport
from moltmesh.mesh.streams import Peer
from moltmesh.mesh.wire import MAX_FRAME_BYTES, Channel, Envelope
from moltmesh.raft.driver import OutcomeUnknown, RaftDriver, Unavailable
from moltmesh.raft.follow import FollowStats, FollowStream
from moltmesh.raft.proto import (
    RAFT_MESH_CODEC,
    KvOp,
    KvReply,
    KvRequest,
    KvStatus,
    RaftBatch,
    decode,
    encode,
    encode_batch,
    split_batches,
)
from moltmesh.raft.tasks import cancel_and_wait

log = logging.getLogger("moltmesh.raft.kv")

Send = Callable[[str, Channel, bytes], bool]
ENVELOPE_OVERHEAD = 1024
"""Bytes of a mesh frame that are not the body (envelope fields: two ids of at most 64
characters, version, channel, msgpack headers), rounded up."""
MAX_CHUNK_BYTES = 4 * 2**20
"""Largest FOLLOW snapshot chunk or entry batch, whatever the frame limit."""
RETRY_PAUSE_S = 0.01
"""Pause before a proposal or forwarded read tries again after a refusal (a leadership
transfer or election under way): a retry without one would spin the event loop."""
MAX_SERVED_TIMEOUT_S = 60.0
"""The longest a node works on another node's request, whatever timeout it asks for."""
MAX_SERVED_PER_PEER = 256
"""Requests of one peer served at once; more are refused (UNAVAILABLE: not applied)."""
READ_ATTEMPT_S = 1.0
"""How long a non-member waits for one member's answer to a forwarded linearizable read before
asking another (a read, unlike a write, can be asked again)."""
WATCH_MAX_EVENTS = 1000
WATCH_MAX_BYTES = 4 * 1024 * 1024
"""One watch answer holds about this many events or bytes at most (ending at a revision's end):
a watch from an old revision must not build the whole history into one reply."""
WATCH_REARM_S = 1.0
"""A waiting watch looks again at least this often, whatever woke it or not (the followed
copy wakes it on any change, not per prefix)."""


def _checked_timeout(timeout: float) -> float:
    """``timeout`` if it is a positive, finite number of seconds; ``ValueError`` otherwise."""
    if type(timeout) is float and 0.0 < timeout < math.inf:
        return timeout
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive, finite number of seconds, not {timeout!r}")
    return float(timeout)


class PeerUnreachable(TimeoutError):
    """A request to another node could not be sent (no stream, queue full, too large): it
    never left, so nothing it asked for happened."""


class ReplyTooLarge(Exception):
    """The member's answer would not fit in one mesh frame (ask for less, e.g. a narrower
    prefix)."""


@fast_init
@dataclass(frozen=True, slots=True)
class WriteResult:
    """A write applied at ``revision`` (the store's revision after it); ``prev``: the key's
    value before; ``changed``: False for deleting an absent key."""

    revision: int
    prev: KeyValue | None
    changed: bool


class CasMismatch(Exception):
    """A compare-and-set found mod revision ``current`` (0: absent), not the expected one."""

    def __init__(self, key: str, expected: int, current: int, revision: int) -> None:
        super().__init__(f"{key}: mod revision is {current}, not {expected}")
        self.key, self.expected, self.current, self.revision = key, expected, current, revision


class ClusterKv:
    """See the module docstring. ``send`` queues one-way envelopes; ``peers()`` lists live
    members (candidates to follow from when no group member is known yet)."""

    def __init__(
        self,
        driver: RaftDriver,
        send: Send,
        peers: Callable[[], list[str]],
        default_timeout: float = 5.0,
        max_frame_bytes: int | None = None,
        drops: DropCounters | None = None,
    ) -> None:
        self.driver = driver
        self.drops = drops or _drops_of(send)
        """Where undecodable RAFT and KV bodies from members are counted (as TCP garbage)."""
        self.node_id = driver.node_id
        self._send_raw = send
        self.max_body = self.chunk_bytes = 0
        self.set_frame_limit(max_frame_bytes or _frame_limit_of(send))
        self.stats = FollowStats()
        self._peers = peers
        self.default_timeout = default_timeout
        self.follow = FollowStream(driver, self.stats, self.call, self._pick_member, self._note,
                                   self._forget, lambda: self.chunk_bytes)  # fmt: skip
        self._members_hint: tuple[str, ...] = ()
        self._leader_hint: str | None = None
        self._ids = itertools.count(1)
        self._calls: dict[int, tuple[str, asyncio.Future[KvReply]]] = {}  # id: (who answers, …)
        self._serving: dict[str, int] = {}  # requests of each peer being served
        self._call_deadlines: list[tuple[float, int]] = []  # heap of (loop time, call id)
        self._call_timer: asyncio.TimerHandle | None = None  # fires at the heap's earliest
        self._tasks: set[asyncio.Task[None]] = set()
        self._follow_task: asyncio.Task[None] | None = None
        self._stopped = False
        self._rng = random.Random()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._follow_task = asyncio.create_task(self.follow.run(), name="kv-follow")

    async def stop(self) -> None:
        """Stop following; calls still waiting for a peer's reply fail now with
        ``TimeoutError`` (a write among them: outcome unknown) instead of waiting forever
        for a timer that no longer runs, and waiting watches end now with ``Unavailable``
        (so a node's HTTP server is not kept waiting by long polls when it shuts down)."""
        self._stopped = True
        self.driver.changes.notify(None)  # every waiting watch looks again, and sees it
        if self._call_timer is not None:
            self._call_timer.cancel()
            self._call_timer = None
        for _, fut in self._calls.values():
            if not fut.done():
                fut.set_exception(TimeoutError("this node stopped before the answer came"))
        self._call_deadlines.clear()
        await cancel_and_wait(self._follow_task, *self._tasks)

    def set_frame_limit(self, max_frame_bytes: int) -> None:
        """Size what is sent for mesh frames of at most ``max_frame_bytes`` (the mesh's
        ``max_frame_bytes``; at least 4096)."""
        self.max_body = min(max_frame_bytes, RAFT_MESH_CODEC.max_size) - ENVELOPE_OVERHEAD
        """Largest body sent in one envelope."""
        self.chunk_bytes = max(1024, min(MAX_CHUNK_BYTES, self.max_body // 2))
        """FOLLOW snapshot chunk size and entry batch size (half a frame: room for the rest)."""

    def transfer_status(self) -> dict[str, object]:
        """Snapshots and messages sent in pieces: the follow stream's counters (``stats``) and
        the Raft receiver's (InstallSnapshot streams installed and refused)."""
        doc: dict[str, object] = dataclasses.asdict(self.stats)
        rx = self.driver.node.snapshot_receiver
        doc["raft_snapshots_installed"] = rx.installed
        doc["raft_snapshots_refused"] = rx.refused
        doc["raft_last_refusal"] = rx.last_error
        return doc

    # --- the local copy ----------------------------------------------------------------------

    @property
    def follow_kv(self) -> KvStore:
        """The copy followed while this node is not a group member."""
        return self.follow.kv

    @property
    def local(self) -> KvStore:
        """The copy reads are served from: the Raft state machine on a member, the followed
        copy elsewhere."""
        return self.driver.kv if self.driver.is_member() else self.follow.kv

    async def _change_under(self, prefix: str) -> None:
        """Return at the local copy's next change: on a member, only a change under ``prefix``
        (``ChangeWaiters``); on the followed copy, any, or this node joining the group (the
        driver wakes all its waiters when membership flips: reads move to its copy)."""
        joined = self.driver.changes.wait(prefix)
        if self.driver.is_member():
            await joined
            return
        followed = asyncio.ensure_future(self.follow.changed.wait())
        try:
            await asyncio.wait((joined, followed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()
            followed.cancel()

    def members(self) -> tuple[str, ...]:
        if self.driver.is_member():
            c = self.driver.node.conf_state
            return tuple(sorted({*c.voters, *c.learners}))
        return self._members_hint

    # --- public API ------------------------------------------------------------------------------

    async def get(
        self, key: str, *, consistency: str = "linearizable", timeout: float | None = None
    ) -> tuple[KeyValue | None, int]:
        """``key``'s value (``None``: absent) and the revision read at."""
        kvs, rev = await self._read(key, False, consistency, timeout)
        return (kvs[0] if kvs else None), rev

    async def list(
        self, prefix: str = "", *, consistency: str = "linearizable", timeout: float | None = None
    ) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` (sorted) and the revision read at."""
        return await self._read(prefix, True, consistency, timeout)

    # The writes return ``_write``'s coroutine (awaited, gathered or made a task like that of
    # an ``async def``) rather than wrapping it in one more: one coroutine less per write.

    def put(
        self, key: str, value: bytes, *, timeout: float | None = None
    ) -> Coroutine[Any, Any, WriteResult]:
        """Set ``key`` to ``value`` (awaitable)."""
        return self._write(Put(key, value), timeout)

    def delete(self, key: str, *, timeout: float | None = None) -> Coroutine[Any, Any, WriteResult]:
        """Remove ``key`` (awaitable; ``changed`` is False when it was absent)."""
        return self._write(Delete(key), timeout)

    def cas(
        self, key: str, expected: int, value: bytes, *, timeout: float | None = None
    ) -> Coroutine[Any, Any, WriteResult]:
        """Set ``key`` only if its mod revision is ``expected`` (0: only if absent); the
        awaited result raises ``CasMismatch`` otherwise."""
        return self._write(Cas(key, expected, value), timeout)

    async def watch(
        self, prefix: str, since: int, *, exact: bool = False, timeout: float = 30.0
    ) -> tuple[list[Event], int]:
        """Changes under ``prefix`` (only to key ``prefix`` when ``exact``) at revision
        ``since`` or later, waiting up to ``timeout`` s for the first; returns them and the
        revision they are complete up to: the local revision, or, when the answer reached
        ``WATCH_MAX_EVENTS`` or ``WATCH_MAX_BYTES`` (one answer never builds the whole history),
        the last event's (the watcher resumes at it + 1 either way). Raises
        ``CompactedRevisionError`` when ``since`` is forgotten, ``Unavailable`` when the node
        stops while the watch waits."""
        loop = asyncio.get_running_loop()
        end = loop.time() + _checked_timeout(timeout)
        while True:
            store = self.local
            revision = store.revision
            events = store.watch(
                prefix, since, exact=exact, limit=WATCH_MAX_EVENTS, limit_bytes=WATCH_MAX_BYTES
            )
            if len(events) >= WATCH_MAX_EVENTS or (
                events and sum(map(event_size, events)) >= WATCH_MAX_BYTES
            ):
                revision = events[-1].revision  # (maybe) cut short: complete up to here
            left = end - loop.time()
            if events or left <= 0:
                return events, revision
            if self._stopped:
                raise Unavailable("this node is stopping")
            if self.driver.failure is not None:
                raise Unavailable(f"raft stopped on this node: {self.driver.failure!r}")
            # Nothing under ``prefix`` up to ``revision``: the next look starts after it (no
            # await since the scan, so no change is missed).
            since = max(since, revision + 1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, WATCH_REARM_S)):
                    await self._change_under(prefix)

    # --- reads ---------------------------------------------------------------------------------

    def _read_local(self, key: str, prefix: bool) -> tuple[list[KeyValue], int]:
        store = self.local
        if prefix:
            return store.range(key), store.revision
        kv = store.get(key)
        return ([kv] if kv is not None else []), store.revision

    async def _read(
        self, key: str, prefix: bool, consistency: str, timeout: float | None
    ) -> tuple[list[KeyValue], int]:
        if consistency not in ("linearizable", "stale"):
            raise ValueError("consistency must be linearizable or stale")
        if consistency == "stale":
            return self._read_local(key, prefix)
        timeout = _checked_timeout(self.default_timeout if timeout is None else timeout)
        if self.driver.is_member():
            await self.driver.read_barrier(timeout)
            return self._read_local(key, prefix)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while (left := end - loop.time()) > 0:
            target = self._pick_member()
            if target is None:
                break
            attempt = min(left, READ_ATTEMPT_S)  # a read is safe to repeat: try another member
            req = KvRequest(0, KvOp.READ, key=key, prefix=prefix, timeout_ms=int(attempt * 1000))
            try:
                reply = await self.call(target, req, attempt)
            except TimeoutError:  # PeerUnreachable included
                self._forget(target)
                continue
            if reply.status is KvStatus.OK:
                return list(reply.kvs), reply.revision
            if reply.status is KvStatus.TOO_LARGE:
                raise ReplyTooLarge(reply.reason)
            self._note(reply)
            await asyncio.sleep(RETRY_PAUSE_S)
        raise Unavailable("no quorum: no group member answered a linearizable read in time")

    # --- writes ----------------------------------------------------------------------------------

    async def _write(self, cmd: KvCommand, timeout: float | None) -> WriteResult:
        timeout = _checked_timeout(self.default_timeout if timeout is None else timeout)
        data = encode_command(cmd)
        d = self.driver
        if d.node.role is Role.LEADER:  # proposed here: the result maps straight to ours
            try:
                result = await d.submit(data, timeout, cmd)
            except NotLeader:
                pass  # a transfer under way: the general path finds the leader
            else:
                if isinstance(result, Ok):
                    return WriteResult(result.revision, result.prev, result.changed)
                if isinstance(result, CasFailed):
                    assert isinstance(cmd, Cas)
                    raise CasMismatch(cmd.key, cmd.expected, result.current, result.revision)
                reason = result.reason if isinstance(result, Rejected) else "not a KV command"
                raise ValueError(f"rejected by the state machine: {reason}")
        reply = await self.propose(data, timeout)
        if reply.status is KvStatus.CAS_FAILED:
            assert isinstance(cmd, Cas)
            raise CasMismatch(cmd.key, cmd.expected, reply.current, reply.revision)
        if reply.status is KvStatus.REJECTED:
            raise ValueError(f"rejected by the state machine: {reply.reason}")
        return WriteResult(reply.revision, reply.kvs[0] if reply.kvs else None, reply.changed)

    async def propose(self, command: bytes, timeout: float) -> KvReply:
        """Get ``command`` applied by the leader. Returns an OK, CAS_FAILED or REJECTED reply;
        raises ``Unavailable`` (not applied) or ``OutcomeUnknown``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        reason = "no leader known"
        sent = False
        while (left := end - loop.time()) > 0:
            d = self.driver
            if d.is_member():
                leader = d.leader() or await d.wait_leader(min(left, 1.0))
                if leader is None:
                    reason = "no quorum: no leader elected"
                    continue
            else:
                leader = self._leader_hint or self._pick_member()
                if leader is None:
                    reason = "no group member known to this node"
                    await asyncio.sleep(min(0.05, max(left, 0)))
                    continue
            if leader == self.node_id:
                try:
                    return _reply_of(await d.propose(command, end - loop.time()))
                except NotLeader as e:  # a transfer under way, or a stale hint naming us
                    reason = f"not leader any more ({e})"
                    if self._leader_hint == self.node_id:
                        self._leader_hint = None
                    await asyncio.sleep(min(RETRY_PAUSE_S, max(left, 0)))
                    continue
            req = KvRequest(0, KvOp.PROPOSE, command=command, timeout_ms=int(left * 1000))
            try:
                reply = await self.call(leader, req, left)
            except PeerUnreachable:  # it never left: not proposed
                reason = f"{leader} is unreachable"
                self._forget(leader)
                if self._leader_hint == leader:
                    self._leader_hint = None
                await asyncio.sleep(min(RETRY_PAUSE_S, max(left, 0)))
                continue
            except TimeoutError:
                sent = True  # it left and no answer came: applied or not, nobody knows
                break
            if reply.status in (KvStatus.OK, KvStatus.CAS_FAILED, KvStatus.REJECTED):
                return reply
            if reply.status in (KvStatus.UNKNOWN, KvStatus.TOO_LARGE):
                raise OutcomeUnknown(reply.reason)  # applied or not, its answer was lost
            reason = reply.reason  # a refusal: that attempt was not proposed
            self._note(reply)
            if self._leader_hint == leader:
                self._leader_hint = None
            await asyncio.sleep(RETRY_PAUSE_S)
        if sent:
            raise OutcomeUnknown(f"no answer within {timeout} s after the write was sent")
        raise Unavailable(reason, self.driver.leader())

    # --- requests between nodes ----------------------------------------------------------------

    def _pick_member(self) -> str | None:
        members = [m for m in self.members() if m != self.node_id]
        if not members:
            members = [p for p in self._peers() if p != self.node_id]
        return self._rng.choice(sorted(members)) if members else None

    def _forget(self, member: str) -> None:
        """``member`` did not answer: ask another one next."""
        self._members_hint = tuple(m for m in self._members_hint if m != member)

    def _note(self, reply: KvReply) -> None:
        if reply.members:
            self._members_hint = reply.members
        if reply.leader:
            self._leader_hint = reply.leader

    async def call(self, dst: str, req: KvRequest, timeout: float) -> KvReply:
        """Send ``req`` to ``dst`` and wait for its reply; ``TimeoutError`` after ``timeout``.

        No timer per call: deadlines wait in one heap, and one timer handle, armed for the
        earliest, fails the calls whose deadline passed."""
        rid = next(self._ids)
        req = dataclasses.replace(req, id=rid, timeout_ms=max(1, min(req.timeout_ms, 2**32 - 1)))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[KvReply] = loop.create_future()
        self._calls[rid] = (dst, fut)
        try:
            if not self._send(dst, Channel.KV, encode(req)):
                raise PeerUnreachable(dst)
            deadline = loop.time() + timeout
            heapq.heappush(self._call_deadlines, (deadline, rid))
            timer = self._call_timer
            if timer is None or deadline < timer.when():
                if timer is not None:
                    timer.cancel()
                self._call_timer = loop.call_at(deadline, self._expire_calls)
            return await fut
        finally:
            self._calls.pop(rid, None)

    def _expire_calls(self) -> None:
        """Fail the calls whose deadline passed (``TimeoutError``); re-arm for the next."""
        self._call_timer = None
        heap = self._call_deadlines
        loop = asyncio.get_running_loop()
        now = loop.time()
        while heap:
            deadline, rid = heap[0]
            _, fut = self._calls.get(rid, ("", None))
            if fut is None or fut.done():
                heapq.heappop(heap)  # answered meanwhile
                continue
            if deadline > now:
                self._call_timer = loop.call_at(deadline, self._expire_calls)
                return
            heapq.heappop(heap)
            fut.set_exception(TimeoutError())

    async def on_raft(self, peer: Peer, env: Envelope) -> None:
        """RAFT channel handler: step every message of the batch (sent by ``peer`` only)."""
        try:
            batch = decode(env.body)
            if not isinstance(batch, RaftBatch):
                return None
            msgs = [decode_raft(b) for b in batch.messages]
        except DecodeError as e:
            self._undecodable(peer, Channel.RAFT, e)
            return None
        mine = [m for m in msgs if getattr(m, "src", None) == peer.node_id]
        rx = self.driver.node.snapshot_receiver
        refused = rx.refused
        self.driver.step(mine)
        if rx.refused > refused:
            log.warning("%s; asked for it again", rx.last_error or "snapshot refused")
        return None

    def _undecodable(self, peer: Peer, channel: Channel, e: DecodeError) -> None:
        self.drops.add(Transport.TCP, DropReason.GARBAGE)
        log.debug("undecodable %s body from %s: %s", channel.name, peer.node_id, e.reason)

    def _send(self, dst: str, channel: Channel, body: bytes) -> bool:
        """Queue ``body`` unless it cannot fit in one mesh frame (counted and logged)."""
        if len(body) > self.max_body:
            self.stats.oversize_dropped += 1
            log.warning("not sent to %s: a %s body of %d bytes exceeds the frame limit (%d)",
                        dst, channel.name, len(body), self.max_body)  # fmt: skip
            return False
        return self._send_raw(dst, channel, body)

    def send_raft(self, dst: str, msgs: list[object]) -> None:
        """Send ``msgs`` to ``dst`` in as few RAFT envelopes as fit the frame limit (in order;
        a message too large for any frame is dropped and counted: Raft resends, and its
        message sizes must stay below the frame limit)."""
        batches, too_big = split_batches([encode_raft(m) for m in msgs], self.max_body)
        for size in too_big:
            self.stats.oversize_dropped += 1
            log.warning("a raft message of %d bytes to %s exceeds the frame limit (%d): not sent",
                        size, dst, self.max_body)  # fmt: skip
        for batch in batches:
            self.stats.raft_batches += 1
            self._send(dst, Channel.RAFT, encode_batch(batch.messages))

    async def on_kv(self, peer: Peer, env: Envelope) -> None:
        """KV channel handler: replies resolve our calls; requests are served in a task."""
        try:
            msg = decode(env.body)
        except DecodeError as e:
            self._undecodable(peer, Channel.KV, e)
            return None
        if isinstance(msg, KvReply):
            dst, fut = self._calls.get(msg.id, ("", None))
            if fut is not None and not fut.done() and dst == peer.node_id:
                fut.set_result(msg)
        elif isinstance(msg, KvRequest):
            src = peer.node_id
            if self._serving.get(src, 0) >= MAX_SERVED_PER_PEER:
                self.stats.busy_refused += 1
                reply = KvReply(msg.id, KvStatus.UNAVAILABLE, "too many requests in flight")
                self._send(src, Channel.KV, encode(reply))
                return None
            self._serving[src] = self._serving.get(src, 0) + 1
            task = asyncio.create_task(self._serve(src, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _t: self._served(src))
        return None

    def _served(self, src: str) -> None:
        left = self._serving.get(src, 1) - 1
        if left > 0:
            self._serving[src] = left
        else:
            self._serving.pop(src, None)

    async def _serve(self, src: str, req: KvRequest) -> None:
        try:
            reply = await self._answer(req)
        except Exception as e:  # a request must never kill the node
            log.exception("kv request failed")
            reply = KvReply(req.id, KvStatus.UNAVAILABLE, f"internal error: {e}")
        try:
            body = encode(reply)
        except Exception as e:  # EncodeError: larger than the codec allows
            body, why = b"", str(e)
        else:
            why = f"the answer is {len(body)} bytes, more than one frame ({self.max_body})"
        if not body or len(body) > self.max_body:
            self.stats.oversize_dropped += 1
            body = encode(KvReply(req.id, KvStatus.TOO_LARGE, why))
        self._send(src, Channel.KV, body)

    async def _answer(self, req: KvRequest) -> KvReply:
        d = self.driver
        members = self.members()
        if not d.is_member():
            return KvReply(req.id, KvStatus.NOT_MEMBER, "not a group member", members=members,
                           leader=self._leader_hint)  # fmt: skip
        timeout = min(req.timeout_ms / 1000, MAX_SERVED_TIMEOUT_S)
        if req.op is KvOp.PROPOSE:
            if d.leader() != self.node_id:
                return KvReply(req.id, KvStatus.UNAVAILABLE, "not the leader", leader=d.leader(),
                               members=members)  # fmt: skip
            try:  # (the codec refuses one over MAX_COMMAND_BYTES too)
                cmd = decode_command(req.command)
            except DecodeError as e:  # refused here: it never reaches the log
                return KvReply(req.id, KvStatus.REJECTED, f"not a KV command: {e.reason}")
            if isinstance(cmd, Batch):  # only a leader groups commands, from their proposers
                return KvReply(req.id, KvStatus.REJECTED, "a batch cannot be forwarded")
            try:
                r = _reply_of(await d.propose(req.command, timeout, cmd))
            except NotLeader as e:
                return KvReply(req.id, KvStatus.UNAVAILABLE, f"not the leader ({e})",
                               leader=d.leader(), members=members)  # fmt: skip
            except Unavailable as e:
                return KvReply(req.id, KvStatus.UNAVAILABLE, e.reason, leader=d.leader())
            except OutcomeUnknown as e:
                return KvReply(req.id, KvStatus.UNKNOWN, str(e))
            return KvReply(req.id, r.status, r.reason, r.revision, r.kvs, r.current, r.changed)
        if req.op is KvOp.READ:
            try:
                if req.linearizable:
                    await d.read_barrier(timeout)
            except Unavailable as e:
                return KvReply(req.id, KvStatus.UNAVAILABLE, e.reason, leader=d.leader())
            kvs, rev = self._read_local(req.key, req.prefix)
            return KvReply(req.id, KvStatus.OK, revision=rev, kvs=tuple(kvs), members=members)
        return await self.follow.answer(req, members)


def _drops_of(send: Send) -> DropCounters:
    """The drop counters of the mesh streams behind ``send`` (a ``MeshTransport.send``), else
    counters of our own."""
    streams = getattr(getattr(send, "__self__", None), "streams", None)
    drops = getattr(streams, "drops", None)
    return drops if isinstance(drops, DropCounters) else DropCounters()


def _frame_limit_of(send: Send) -> int:
    """The frame limit of the mesh streams behind ``send`` (a ``MeshTransport.send``), else
    the mesh's default."""
    streams = getattr(getattr(send, "__self__", None), "streams", None)
    limit = getattr(getattr(streams, "config", None), "max_frame_bytes", None)
    return limit if isinstance(limit, int) else MAX_FRAME_BYTES


def _reply_of(result: Ok | CasFailed | Rejected | None) -> KvReply:
    if isinstance(result, Ok):
        prev = (result.prev,) if result.prev is not None else ()
        return KvReply(0, KvStatus.OK, revision=result.revision, kvs=prev, changed=result.changed)
    if isinstance(result, CasFailed):
        return KvReply(0, KvStatus.CAS_FAILED, revision=result.revision, current=result.current)
    if isinstance(result, Rejected):
        return KvReply(0, KvStatus.REJECTED, result.reason, revision=result.revision)
    return KvReply(0, KvStatus.REJECTED, "not a KV command")
