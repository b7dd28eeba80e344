"""Admission of inbound mesh connections: who may hold a socket, and for how long.

Every accepted TCP connection gets a ``Ticket`` from ``ConnGate.open`` *before* its TLS
handshake, or is refused (and counted by the caller) with a ``DropReason``. A ticket moves
through stages, and each stage has its own budget, so that connections without a member
certificate can never take the slots of members:

- ``HANDSHAKE``: accepted, TLS not finished. At most ``limits.handshakes`` at once, at most
  ``limits.handshakes_per_ip`` from one source address (~1,000 sockets that never speak TLS
  cannot use up the process's descriptors).
- ``JOIN``: TLS done without a client certificate (a device with a join token, CA holders
  only). At most ``limits.joins`` at once, ``limits.joins_per_ip`` per source address, and the
  hello must come within ``limits.join_hello_s``.
- ``MEMBER``: TLS done with a certificate; counted only in the total.

Every stage counts in ``limits.total`` (in handshake + join + member), and one source address
may hold at most ``limits.per_ip`` of it. Because ``handshakes + joins < total``, members always
have ``total - handshakes - joins`` slots that unauthenticated peers cannot reach.

Pure bookkeeping: no sockets, no clock; ``MeshStreams`` drives it on one event loop.
"""

from __future__ import annotations

import enum
import resource
from collections import Counter
from dataclasses import dataclass

from moltmesh.config import MeshConfig
from moltmesh.mesh.drops import DropReason

JOIN_SLOTS = 8
"""Connections without a certificate (joins) served at once."""
JOIN_SLOTS_PER_IP = 2
"""Joins from one source address at once."""
JOIN_HELLO_S = 1.5
"""A connection without a certificate must send its join hello this soon after TLS."""
HANDSHAKES_PER_IP = 16
"""Connections from one source address in the TLS handshake at once."""
FD_SHARE = 2
"""Inbound mesh connections use at most 1/FD_SHARE of the soft RLIMIT_NOFILE."""


class Stage(enum.Enum):
    HANDSHAKE = "handshake"
    JOIN = "join"
    MEMBER = "member"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ConnLimits:
    """The budgets of ``ConnGate`` (see the module docstring). ``handshake_s`` bounds the TLS
    handshake; ``join_hello_s`` the wait for a join hello."""

    total: int
    per_ip: int
    handshakes: int
    handshakes_per_ip: int
    joins: int
    joins_per_ip: int
    handshake_s: float
    join_hello_s: float

    @classmethod
    def from_config(cls, config: MeshConfig, nofile: int | None = None) -> ConnLimits:
        """Limits for ``config``: ``total`` is ``max_connections``, but never more than
        ``1/FD_SHARE`` of ``nofile`` (default: the process's soft RLIMIT_NOFILE), so the node
        refuses connections before it runs out of descriptors for its log and its API."""
        if nofile is None:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            nofile = soft if soft != resource.RLIM_INFINITY else 1 << 20
        total = max(1, min(config.max_connections, nofile // FD_SHARE))
        handshakes = max(1, total // 4)
        joins = min(JOIN_SLOTS, max(1, total // 8))
        return cls(
            total=total,
            per_ip=max(1, total // 2),
            handshakes=handshakes,
            handshakes_per_ip=min(HANDSHAKES_PER_IP, max(1, handshakes // 2)),
            joins=joins,
            joins_per_ip=min(JOIN_SLOTS_PER_IP, joins),
            handshake_s=config.connect_timeout_s,
            join_hello_s=min(JOIN_HELLO_S, config.request_timeout_s),
        )


@dataclass(eq=False, slots=True)
class Ticket:
    """One admitted connection: its source address and stage."""

    ip: str
    stage: Stage = Stage.HANDSHAKE


class ConnGate:
    """Counts inbound connections by stage and source address; refuses over budget."""

    def __init__(self, limits: ConnLimits) -> None:
        self.limits = limits
        self._stage: Counter[Stage] = Counter()
        self._by_ip: Counter[str] = Counter()
        self._by_ip_stage: Counter[tuple[str, Stage]] = Counter()

    def count(self, stage: Stage | None = None, ip: str | None = None) -> int:
        """Open connections, optionally of one stage and/or from one address."""
        if stage is None:
            return self._by_ip[ip] if ip is not None else sum(self._stage.values())
        return self._by_ip_stage[(ip, stage)] if ip is not None else self._stage[stage]

    def open(self, ip: str) -> Ticket | DropReason:
        """A new TCP connection from ``ip``: a ticket in the handshake stage, or why not."""
        lim = self.limits
        if self.count() >= lim.total:
            return DropReason.CONN_LIMIT
        if self._by_ip[ip] >= lim.per_ip:
            return DropReason.CONN_PER_IP
        if (
            self._stage[Stage.HANDSHAKE] >= lim.handshakes
            or self._by_ip_stage[(ip, Stage.HANDSHAKE)] >= lim.handshakes_per_ip
        ):  # fmt: skip
            return DropReason.HANDSHAKE_LIMIT
        ticket = Ticket(ip)
        self._enter(ticket, Stage.HANDSHAKE)
        self._by_ip[ip] += 1
        return ticket

    def member(self, ticket: Ticket) -> None:
        """The handshake finished with a client certificate."""
        self._move(ticket, Stage.MEMBER)

    def join(self, ticket: Ticket) -> DropReason | None:
        """The handshake finished without a certificate: take a join slot, or why not (the
        ticket then stays in its stage; close it)."""
        lim = self.limits
        if (
            self._stage[Stage.JOIN] >= lim.joins
            or self._by_ip_stage[(ticket.ip, Stage.JOIN)] >= lim.joins_per_ip
        ):  # fmt: skip
            return DropReason.JOIN_LIMIT
        self._move(ticket, Stage.JOIN)
        return None

    def close(self, ticket: Ticket) -> None:
        """The connection is gone; idempotent."""
        if ticket.stage is Stage.CLOSED:
            return
        self._leave(ticket)
        ticket.stage = Stage.CLOSED
        self._by_ip[ticket.ip] -= 1
        if self._by_ip[ticket.ip] <= 0:
            del self._by_ip[ticket.ip]

    def _move(self, ticket: Ticket, stage: Stage) -> None:
        if ticket.stage is Stage.CLOSED:
            raise ValueError("ticket already closed")
        self._leave(ticket)
        self._enter(ticket, stage)

    def _enter(self, ticket: Ticket, stage: Stage) -> None:
        ticket.stage = stage
        self._stage[stage] += 1
        self._by_ip_stage[(ticket.ip, stage)] += 1

    def _leave(self, ticket: Ticket) -> None:
        key = (ticket.ip, ticket.stage)
        self._stage[ticket.stage] -= 1
        self._by_ip_stage[key] -= 1
        if self._by_ip_stage[key] <= 0:
            del self._by_ip_stage[key]
