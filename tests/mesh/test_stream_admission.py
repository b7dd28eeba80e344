"""Connection admission on the mesh port (review9 H1, H2, M4), over real loopback TLS.

Attackers connect from 127.0.0.2 (any 127/8 address reaches loopback on Linux) so that their
per-address budgets are theirs alone; members connect from 127.0.0.1. Every wait is on an
observed event (a drop counted, a gate count reached), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from moltmesh.config import MeshConfig
from moltmesh.identity import load_or_create_identity
from moltmesh.mesh.conn_limits import ConnGate, ConnLimits, Stage
from moltmesh.mesh.drops import DropCounters, DropReason, Transport
from moltmesh.mesh.errors import AdmissionError
from moltmesh.mesh.join import join
from moltmesh.mesh.tls import join_client_context
from moltmesh.mesh.tokens import JoinToken
from moltmesh.mesh.wire import Channel
from tests.mesh.helpers import Member, init_holder, join_member, mesh_config, serve

pytestmark = pytest.mark.both_loops

ATTACKER = "127.0.0.2"


async def until(check: Callable[[], bool], drops: DropCounters, what: str, limit: float = 10.0):
    """Wait until ``check()`` holds, re-checking whenever a drop is counted (and every 50 ms
    for changes that count nothing); fails with ``what`` after ``limit`` seconds."""
    changed = asyncio.Event()
    drops.listeners.append(lambda t, r: changed.set())
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await changed.wait()


async def member_request(member: Member, holder: Member) -> bytes:
    """One INFER request from ``member`` to ``holder`` on a fresh connection."""
    member.streams.drop_peer(holder.node_id)
    _, reply = await member.streams.request(
        holder.node_id, holder.address, Channel.INFER, b"still-here", timeout=5.0
    )
    return reply


async def open_tls(address: str, ctx: ssl.SSLContext, local: str = ATTACKER):
    host, port = address.rsplit(":", 1)
    return await asyncio.open_connection(
        host, int(port), ssl=ctx, server_hostname="", local_addr=(local, 0)
    )


async def hold(address: str, ctx: ssl.SSLContext) -> None:
    """Connect without a certificate and wait until the node closes the connection."""
    try:
        reader, writer = await open_tls(address, ctx)
    except (OSError, ssl.SSLError):
        return
    try:
        await reader.read(1)
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


def gate(member: Member) -> ConnGate:
    return member.streams.gate


def refused(drops: DropCounters, *reasons: DropReason) -> int:
    return sum(drops.get(r, Transport.TCP) for r in reasons)


# -- the gate's bookkeeping, without sockets -------------------------------------------------


def test_limits_leave_members_slots_no_unauthenticated_peer_can_reach():
    limits = ConnLimits.from_config(MeshConfig(max_connections=256), nofile=65536)
    assert (limits.total, limits.handshakes, limits.joins, limits.joins_per_ip) == (256, 64, 8, 2)
    assert limits.handshakes + limits.joins < limits.total
    assert limits.handshakes_per_ip == 16 and limits.join_hello_s <= 1.5
    # A small descriptor limit caps the connections, whatever max_connections says.
    assert ConnLimits.from_config(MeshConfig(max_connections=256), nofile=256).total == 128


def test_gate_counts_by_stage_and_address_and_refuses_with_a_reason():
    limits = ConnLimits(total=6, per_ip=4, handshakes=3, handshakes_per_ip=2, joins=2,
                        joins_per_ip=1, handshake_s=1.0, join_hello_s=1.0)  # fmt: skip
    g = ConnGate(limits)
    a1, a2 = g.open("a"), g.open("a")
    assert g.open("a") is DropReason.HANDSHAKE_LIMIT  # 2 per address in the handshake
    b1 = g.open("b")
    assert g.open("c") is DropReason.HANDSHAKE_LIMIT  # 3 in the handshake at once
    assert not isinstance(a1, DropReason) and not isinstance(a2, DropReason)
    assert not isinstance(b1, DropReason)
    assert g.join(a1) is None
    assert g.join(a2) is DropReason.JOIN_LIMIT  # 1 join per address
    g.member(a2)
    assert g.count(Stage.JOIN) == 1 and g.count(Stage.MEMBER) == 1 and g.count(ip="a") == 2
    a3, a4 = g.open("a"), g.open("a")
    assert not isinstance(a3, DropReason) and not isinstance(a4, DropReason)
    g.member(a3)
    assert g.open("a") is DropReason.CONN_PER_IP  # a holds 4 of 6
    c1 = g.open("c")
    assert not isinstance(c1, DropReason)
    assert g.open("d") is DropReason.CONN_LIMIT  # 6 of 6
    for t in (a1, a2, a3, a4, b1, c1, a1):  # closing twice is harmless
        g.close(t)
    assert g.count() == 0 and g.count(ip="a") == 0 and g.count(Stage.HANDSHAKE) == 0


# -- H1: joins never take members' slots -----------------------------------------------------


async def test_members_are_served_while_uncredentialed_connections_hammer_the_port(
    tmp_path: Path,
):
    cfg = mesh_config(max_connections=64)
    holder = await serve(init_holder(tmp_path / "a"), cfg)
    member = await serve(await join_member(holder, tmp_path / "b"), cfg)
    limits = gate(holder).limits
    stop = asyncio.Event()
    ctx = join_client_context()

    async def hammer() -> None:  # reopen each connection as soon as the node closes it
        while not stop.is_set():
            await hold(holder.address, ctx)

    attackers = [asyncio.create_task(hammer()) for _ in range(80)]  # > max_connections
    try:
        # The join slots are full and more attackers were turned away, by reason.
        await until(lambda: gate(holder).count(Stage.JOIN) == limits.joins_per_ip
                    and refused(holder.drops, DropReason.JOIN_LIMIT) >= 20,
                    holder.drops, "join slots full and joins refused")  # fmt: skip
        assert gate(holder).count(Stage.JOIN) <= limits.joins_per_ip  # 2 from one address
        assert gate(holder).count(ip=ATTACKER) <= limits.handshakes_per_ip + limits.joins
        for _ in range(3):  # fresh member connections, while the attack goes on
            assert await member_request(member, holder) == b"echo:still-here"
        assert refused(holder.drops, DropReason.JOIN_LIMIT, DropReason.HANDSHAKE_LIMIT) >= 20
    finally:
        stop.set()
        for task in attackers:
            task.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
        await member.streams.close()
        await holder.streams.close()


async def test_a_connection_without_hello_is_closed_at_the_short_deadline(tmp_path: Path):
    cfg = mesh_config(request_timeout_s=0.3)  # the hello deadline is at most this
    holder = await serve(init_holder(tmp_path / "a"), cfg)
    try:
        reader, writer = await open_tls(holder.address, join_client_context())
        try:
            assert await reader.read(1) == b""  # closed by the node, not by us
        finally:
            writer.close()
        await until(lambda: holder.drops.get(DropReason.JOIN_TIMEOUT) == 1, holder.drops,
                    "the hello timeout counted")  # fmt: skip
        await until(lambda: gate(holder).count() == 0, holder.drops, "the slot released")
        # and the join path still works for a device with a token
        await join_member(holder, tmp_path / "b")
    finally:
        await holder.streams.close()


async def test_join_refusals_are_counted_by_reason(tmp_path: Path):
    holder = await serve(init_holder(tmp_path / "a"), mesh_config())
    try:
        tokens = holder.state.tokens()
        fp, addr = holder.state.ca_fingerprint, holder.address
        good = tokens.create(fp, addr, 600, time.time())
        expiring = tokens.create(fp, addr, 1, time.time() - 5)
        attempts: list[tuple[JoinToken, DropReason]] = [
            (JoinToken(fp, "0" * len(good.token_id), good.secret, addr),
             DropReason.JOIN_UNKNOWN_TOKEN),
            (JoinToken(fp, good.token_id, "wrong" + good.secret[5:], addr),
             DropReason.JOIN_WRONG_SECRET),
            (expiring, DropReason.JOIN_TOKEN_EXPIRED),
        ]  # fmt: skip
        for i, (token, reason) in enumerate(attempts):
            d = tmp_path / f"x{i}"
            with pytest.raises(AdmissionError):
                await join(token, load_or_create_identity(d), d, mesh_config())
            assert holder.drops.get(reason, Transport.TCP) == 1, reason
        await join(good, load_or_create_identity(tmp_path / "b"), tmp_path / "b", mesh_config())
        with pytest.raises(AdmissionError, match="already used"):
            await join(good, load_or_create_identity(tmp_path / "c"), tmp_path / "c",
                       mesh_config())  # fmt: skip
        assert holder.drops.get(DropReason.JOIN_TOKEN_USED, Transport.TCP) == 1
    finally:
        await holder.streams.close()


# -- H2: sockets that never speak TLS --------------------------------------------------------


async def test_silent_sockets_are_refused_at_accept_and_time_out(tmp_path: Path):
    cfg = mesh_config(max_connections=64, connect_timeout_s=1.0)
    holder = await serve(init_holder(tmp_path / "a"), cfg)
    member = await serve(await join_member(holder, tmp_path / "b"), mesh_config())
    per_ip = gate(holder).limits.handshakes_per_ip
    host, port = holder.address.rsplit(":", 1)
    n = 100
    socks = []
    held: list[int] = []  # sockets of the attacker the node holds, at each refusal
    holder.drops.listeners.append(lambda t, r: held.append(gate(holder).count(ip=ATTACKER)))
    try:
        for _ in range(n):
            socks.append(await asyncio.open_connection(host, int(port), local_addr=(ATTACKER, 0)))
        # Each socket is refused at accept or, once admitted, closed at the handshake deadline:
        # all counted, and the node never held more than the per-address budget.
        await until(lambda: holder.drops.get(DropReason.HANDSHAKE_LIMIT) >= n // 2,
                    holder.drops, "sockets past the per-address budget refused")  # fmt: skip
        assert await member_request(member, holder) == b"echo:still-here"
        await until(lambda: holder.drops.get(DropReason.HANDSHAKE_LIMIT)
                    + holder.drops.get(DropReason.HANDSHAKE_TIMEOUT) == n,
                    holder.drops, "every silent socket refused or timed out")  # fmt: skip
        assert holder.drops.get(DropReason.HANDSHAKE_TIMEOUT) >= per_ip
        assert max(held) <= per_ip
        await until(lambda: gate(holder).count(ip=ATTACKER) == 0, holder.drops, "slots freed")
    finally:
        for _, writer in socks:
            writer.close()
        await member.streams.close()
        await holder.streams.close()


# -- M4: failed handshakes are counted by reason ---------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    crt, pem = tmp_path / "ss.crt", tmp_path / "ss.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))  # fmt: skip
    return crt, pem


def client_ctx(cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    ctx = join_client_context()
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


async def attempt(address: str, ctx: ssl.SSLContext) -> None:
    """Connect with ``ctx``; read until the node closes (TLS 1.3 reports a refused client
    certificate only on the client's first read)."""
    with contextlib.suppress(OSError, ssl.SSLError):
        reader, writer = await open_tls(address, ctx)
        try:
            await reader.read(1)
        finally:
            writer.close()


@pytest.mark.parametrize("holder_side", [True, False], ids=["ca_holder", "member"])
async def test_refused_handshakes_are_counted_by_reason(tmp_path: Path, holder_side: bool):
    holder = await serve(init_holder(tmp_path / "a"), mesh_config())
    member = await serve(await join_member(holder, tmp_path / "b"), mesh_config())
    target = holder if holder_side else member
    other = init_holder(tmp_path / "other")
    tries: list[tuple[Callable[[], object], DropReason]] = [
        (lambda: plain_garbage(target.address), DropReason.NOT_TLS),
        (lambda: attempt(target.address, client_ctx(self_signed(tmp_path))), DropReason.BAD_CERT),
        (lambda: attempt(target.address,
                         client_ctx((other.node_cert_path, other.node_key_path))),
         DropReason.BAD_CERT),
    ]  # fmt: skip
    if not holder_side:  # a CA holder hands such connections to the join path instead
        tries.append((lambda: attempt(target.address, client_ctx(None)), DropReason.NO_CERT))
    try:
        for make, reason in tries:
            before = target.drops.get(reason, Transport.TCP)
            await make()  # type: ignore[misc]
            await until(lambda r=reason, b=before: target.drops.get(r, Transport.TCP) == b + 1,
                        target.drops, f"{reason.value} counted")  # fmt: skip
        await until(lambda: gate(target).count() == 0, target.drops, "every slot released")
    finally:
        await member.streams.close()
        await holder.streams.close()


async def plain_garbage(address: str) -> None:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(ATTACKER, 0))
    try:
        writer.write(b"\x00garbage\r\n" * 50)
        await writer.drain()
        with contextlib.suppress(OSError):
            await reader.read(1)
    finally:
        writer.close()


async def test_out_of_descriptors_at_accept_is_counted_and_the_listener_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    holder = await serve(init_holder(tmp_path / "a"), mesh_config())
    member = await serve(await join_member(holder, tmp_path / "b"), mesh_config())
    loop = asyncio.get_running_loop()
    real = loop.sock_accept
    failures = [2]

    async def out_of_fds(sock):  # type: ignore[no-untyped-def]
        if sock in holder.streams._listeners and failures[0] > 0:
            failures[0] -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return await real(sock)

    try:
        monkeypatch.setattr(loop, "sock_accept", out_of_fds)
    except (AttributeError, TypeError):
        pytest.skip("this event loop's methods cannot be replaced")
    try:
        # The accept pending since start uses the real method; the next ones fail twice.
        assert await member_request(member, holder) == b"echo:still-here"
        await until(lambda: holder.drops.get(DropReason.CONN_LIMIT) == 2, holder.drops,
                    "failed accepts counted")  # fmt: skip
        assert await member_request(member, holder) == b"echo:still-here"
    finally:
        await member.streams.close()
        await holder.streams.close()
