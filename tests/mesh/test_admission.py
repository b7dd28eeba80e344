"""Admission over real loopback TLS: joining with a token, and everything that must be refused.

Refusals are asserted on what is exchanged (TLS 1.3 lets a refused client "connect"): the refused
side never gets a reply and the handler never sees its data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import stat
import time
from pathlib import Path

import pytest

from moltmesh.identity import load_or_create_identity
from moltmesh.mesh import ca, store
from moltmesh.mesh.drops import DropCounters, DropReason
from moltmesh.mesh.errors import AdmissionError, ClockSkewError
from moltmesh.mesh.join import JOIN_CODEC, JoinChallenge, JoinService, join
from moltmesh.mesh.revocation import empty
from moltmesh.mesh.streams import MeshStreams, StreamError
from moltmesh.mesh.tls import join_client_context, server_context
from moltmesh.mesh.tokens import parse_token
from moltmesh.mesh.wire import Channel, Envelope, decode_envelope, encode_frame, read_frame
from tests.mesh.helpers import BACKDATE, init_holder, join_member, mesh_config, serve

pytestmark = pytest.mark.both_loops


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_join_issues_a_backdated_certificate_and_the_member_can_talk(tmp_path: Path):
    holder = await serve(init_holder(tmp_path / "a"))
    try:
        b = await join_member(holder, tmp_path / "b")
        assert b.mesh_id == holder.state.mesh_id
        assert b.node_id == load_or_create_identity(tmp_path / "b").node_id
        assert b.ca_fingerprint == holder.state.ca_fingerprint
        assert b.keyring.keys() == holder.state.keyring.keys()
        assert b.ca_key is None and not (b.dir / "ca.key").exists()
        assert mode(b.dir / "node.crt") == 0o600 and mode(b.dir / "keyring.json") == 0o600
        assert mode(b.dir) == 0o700
        now = ca.utcnow()
        assert b.node_cert.not_valid_before_utc <= now - BACKDATE + dt.timedelta(minutes=1)
        assert store.load(tmp_path / "b").node_id == b.node_id
        member_b = await serve(b)
        try:
            peer, reply = await member_b.streams.request(
                holder.node_id, holder.address, Channel.INFER, b"hi"
            )
            assert (peer, reply) == (holder.node_id, b"echo:hi")
            assert holder.echo.got == [(b.node_id, b"hi")]
            # The connection is reused, and works in the other direction too.
            await member_b.streams.request(holder.node_id, holder.address, Channel.INFER, b"2")
            assert len(member_b.streams._conns) == 1
            _, back = await holder.streams.request(b.node_id, member_b.address, Channel.INFER, b"3")
            assert back == b"echo:3"
        finally:
            await member_b.streams.close()
    finally:
        await holder.streams.close()


async def test_token_is_single_use_and_expires_and_needs_the_secret(tmp_path: Path):
    holder = await serve(init_holder(tmp_path / "a"))
    try:
        token = holder.state.tokens().create(
            holder.state.ca_fingerprint, holder.address, 600, time.time()
        )
        assert parse_token(str(token)) == token
        cfg = mesh_config()
        await join(token, load_or_create_identity(tmp_path / "b"), tmp_path / "b", cfg)
        with pytest.raises(AdmissionError, match="already used"):
            await join(token, load_or_create_identity(tmp_path / "c"), tmp_path / "c", cfg)
        assert not store.has_mesh(tmp_path / "c")

        expired = holder.state.tokens().create(
            holder.state.ca_fingerprint, holder.address, 1, time.time() - 10
        )
        with pytest.raises(AdmissionError, match="expired"):
            await join(expired, load_or_create_identity(tmp_path / "d"), tmp_path / "d", cfg)

        fresh = holder.state.tokens().create(
            holder.state.ca_fingerprint, holder.address, 600, time.time()
        )
        wrong = parse_token(str(fresh).replace(fresh.secret, "a" * 32))
        with pytest.raises(AdmissionError, match="wrong join token secret"):
            await join(wrong, load_or_create_identity(tmp_path / "e"), tmp_path / "e", cfg)
        for d in ("d", "e"):
            assert not store.has_mesh(tmp_path / d)
        await join(fresh, load_or_create_identity(tmp_path / "f"), tmp_path / "f", cfg)
    finally:
        await holder.streams.close()


async def test_joiner_pins_the_ca_and_reveals_nothing_to_another_mesh(tmp_path: Path):
    real = await serve(init_holder(tmp_path / "real"))
    impostor_state = init_holder(tmp_path / "impostor")
    impostor = await serve(impostor_state)
    secrets_seen: list[object] = []

    async def lying_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answers any hello with its own CA, hoping for the secret."""
        payload = await read_frame(reader)
        assert payload is not None
        pin = decode_envelope(payload).mesh_id
        challenge = JoinChallenge(
            ca.cert_der(impostor_state.ca_cert), impostor_state.mesh_id, int(time.time() * 1e6)
        )
        env = Envelope(pin, Channel.JOIN, impostor_state.node_id, JOIN_CODEC.encode(challenge))
        writer.write(encode_frame(env))
        await writer.drain()
        secrets_seen.append(await read_frame(reader))
        writer.close()

    liar = await asyncio.start_server(
        lying_server, "127.0.0.1", 0, ssl=server_context(impostor_state, accept_joins=True)
    )
    liar_address = f"127.0.0.1:{liar.sockets[0].getsockname()[1]}"
    try:
        cfg = mesh_config()
        # A holder of another mesh does not know the token id: refused, nothing is issued.
        token = real.state.tokens().create(
            real.state.ca_fingerprint, impostor.address, 600, time.time()
        )
        with pytest.raises(AdmissionError):
            await join(token, load_or_create_identity(tmp_path / "x"), tmp_path / "x", cfg)
        # A server that answers anyway fails the fingerprint pin before the secret is sent.
        token = real.state.tokens().create(
            real.state.ca_fingerprint, liar_address, 600, time.time()
        )
        with pytest.raises(AdmissionError, match="fingerprint"):
            await join(token, load_or_create_identity(tmp_path / "y"), tmp_path / "y", cfg)
        assert secrets_seen == [None]  # the liar read EOF: no proof, no secret
        assert not store.has_mesh(tmp_path / "x") and not store.has_mesh(tmp_path / "y")
        real.state.tokens().check(token.token_id, time.time())  # still unused
    finally:
        liar.close()
        await real.streams.close()
        await impostor.streams.close()


async def test_clock_too_far_off_is_reported_by_name(tmp_path: Path):
    state = init_holder(tmp_path / "a")
    cfg = mesh_config(max_clock_skew_s=60.0)
    drops = __import__("moltmesh.mesh.drops", fromlist=["DropCounters"]).DropCounters()
    service = JoinService(state, cfg, drops, clock=lambda: time.time() + 3600)
    streams = MeshStreams(state, cfg, drops, {}, service.handle)
    host, port = await streams.start("127.0.0.1", 0)
    try:
        token = state.tokens().create(state.ca_fingerprint, f"{host}:{port}", 7200, time.time())
        with pytest.raises(ClockSkewError, match="clock is 3600 s behind") as e:
            await join(token, load_or_create_identity(tmp_path / "b"), tmp_path / "b", cfg)
        assert e.value.skew_s == pytest.approx(3600, abs=5)
        state.tokens().check(token.token_id, time.time())  # not consumed
    finally:
        await streams.close()


async def _raw_tls(
    address: str, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port), ssl=ctx, server_hostname="")


async def _reply_or_nothing(reader: asyncio.StreamReader) -> bytes | None:
    """What the server answers: a frame, or None when it closes (EOF or TLS alert)."""
    try:
        return await asyncio.wait_for(read_frame(reader), 10)
    except (ssl.SSLError, ConnectionError):
        return None


async def test_no_certificate_gets_nothing(tmp_path: Path):
    holder = await serve(init_holder(tmp_path / "a"))
    b = await join_member(holder, tmp_path / "b")
    member_b = await serve(b)  # not a CA holder: no join handler at all
    try:
        for target in (holder, member_b):
            reader, writer = await _raw_tls(target.address, join_client_context())
            env = Envelope(holder.state.mesh_id, Channel.INFER, b.node_id, b"steal")
            writer.write(encode_frame(env))
            got = await _reply_or_nothing(reader)
            assert got is None
            writer.close()
        assert holder.echo.got == [] and member_b.echo.got == []
    finally:
        await member_b.streams.close()
        await holder.streams.close()


async def test_another_meshs_certificate_gets_nothing(tmp_path: Path):
    holder = await serve(init_holder(tmp_path / "a"))
    other = init_holder(tmp_path / "other")
    try:
        stranger = MeshStreams(other, mesh_config(), DropCounters())
        with pytest.raises(StreamError):  # it cannot even verify us
            await stranger.request(None, holder.address, Channel.INFER, b"steal")
        # One that does not check us but presents its certificate is refused by the TLS layer.
        attacker = join_client_context()
        attacker.load_cert_chain(other.node_cert_path, other.node_key_path)
        reader, writer = await _raw_tls(holder.address, attacker)
        writer.write(
            encode_frame(Envelope(holder.state.mesh_id, Channel.INFER, other.node_id, b"x"))
        )
        assert await _reply_or_nothing(reader) is None
        writer.close()
        # Even claiming our mesh id in the envelope: the handshake refuses the certificate.
        other.mesh_id = holder.state.mesh_id
        with pytest.raises(StreamError):
            await stranger.request(None, holder.address, Channel.INFER, b"steal")
        await stranger.close()
        assert holder.echo.got == []
    finally:
        await holder.streams.close()


async def test_revoked_node_and_wrong_node_id_get_nothing(tmp_path: Path):
    holder = await serve(init_holder(tmp_path / "a"))
    b = await join_member(holder, tmp_path / "b")
    member_b = await serve(b)
    try:
        await member_b.streams.request(holder.node_id, holder.address, Channel.INFER, b"ok")
        assert holder.echo.got == [(b.node_id, b"ok")]
        rl = empty(holder.state.mesh_id).adding(b.node_id, 1)
        assert holder.state.ca_key is not None
        holder.state.save_revocations(rl.sign(holder.state.ca_key))
        # Over the existing connection, then over a new one: both refused, nothing delivered.
        with pytest.raises(StreamError):
            await member_b.streams.request(holder.node_id, holder.address, Channel.INFER, b"x")
        with pytest.raises(StreamError):
            await member_b.streams.request(holder.node_id, holder.address, Channel.INFER, b"y")
        assert holder.echo.got == [(b.node_id, b"ok")]
        assert holder.drops.get(DropReason.REVOKED) >= 2
        # Asking for one node at the address of another is refused by the client itself.
        c = await join_member(holder, tmp_path / "c")
        member_c = await serve(c)
        try:
            with pytest.raises(StreamError, match="wrong node"):
                await member_c.streams.request(b.node_id, holder.address, Channel.INFER, b"z")
        finally:
            await member_c.streams.close()
    finally:
        await member_b.streams.close()
        await holder.streams.close()


async def test_garbage_truncated_oversize_and_spoofed_frames_are_counted(tmp_path: Path):
    holder = await serve(init_holder(tmp_path / "a"), mesh_config(max_frame_bytes=4096))
    b = await join_member(holder, tmp_path / "b")
    try:
        from moltmesh.mesh.tls import client_context

        ctx = client_context(b)
        mesh = holder.state.mesh_id
        cases = [
            (b"\x00\x00\x00\x05hello", DropReason.GARBAGE),
            (b"\x00\x10\x00\x00", DropReason.OVERSIZE),
            (encode_frame(Envelope("other-mesh", Channel.INFER, b.node_id, b"x")),
             DropReason.WRONG_MESH),
            (encode_frame(Envelope(mesh, Channel.INFER, holder.node_id, b"spoof")),
             DropReason.GARBAGE),
            (encode_frame(Envelope(mesh, Channel.INFER, b.node_id, b"cut"))[:-1],
             DropReason.GARBAGE),
        ]  # fmt: skip
        for data, reason in cases:
            before = holder.drops.get(reason)
            reader, writer = await _raw_tls(holder.address, ctx)
            writer.write(data)
            if data.endswith(b"cu"):
                writer.write_eof() if writer.can_write_eof() else None
                writer.close()
            assert await _reply_or_nothing(reader) is None, reason
            writer.close()
            assert holder.drops.get(reason) == before + 1, reason
        # Plain TCP garbage never completes a handshake (refused by the TLS layer, uncounted);
        # the server keeps serving.
        host, port = holder.address.rsplit(":", 1)
        for junk in (b"GET / HTTP/1.0\r\n\r\n" * 10, b"\x16\x03\x01\x00\x05hello"):
            r, w = await asyncio.open_connection(host, int(port))
            w.write(junk)
            assert await r.read() == b""
            w.close()
        assert holder.echo.got == []
        member_b = await serve(b)
        try:
            _, reply = await member_b.streams.request(
                holder.node_id, holder.address, Channel.INFER, b"still fine"
            )
            assert reply == b"echo:still fine"
        finally:
            await member_b.streams.close()
        got = decode_envelope(encode_frame(Envelope(mesh, Channel.INFER, "n", b""))[4:])
        assert got.mesh_id == mesh
    finally:
        await holder.streams.close()


async def test_a_stream_closed_by_the_peer_is_replaced_transparently(tmp_path: Path):
    holder = await serve(init_holder(tmp_path / "a"))
    b = await join_member(holder, tmp_path / "b")
    member_b = await serve(b)
    try:
        streams = member_b.streams
        await streams.request(holder.node_id, holder.address, Channel.INFER, b"1")
        conn = streams._conns[holder.node_id]
        holder.streams.drop_peer(b.node_id)  # as the idle timeout or a restart would
        assert await conn.reader.read() == b""  # b observes the close
        _, reply = await streams.request(holder.node_id, holder.address, Channel.INFER, b"2")
        assert reply == b"echo:2" and streams._conns[holder.node_id] is not conn
        assert [body for _, body in holder.echo.got] == [b"1", b"2"]
    finally:
        await member_b.streams.close()
        await holder.streams.close()


async def test_a_member_whose_certificate_expired_joins_again(tmp_path: Path):
    from moltmesh.identity import write_private
    from moltmesh.mesh.errors import CredentialError

    holder = await serve(init_holder(tmp_path / "a"))
    try:
        b = await join_member(holder, tmp_path / "b")
        assert holder.state.ca_key is not None
        long_ago = ca.utcnow() - dt.timedelta(days=90)
        expired = ca.issue_node_cert(
            holder.state.ca_key, holder.state.ca_cert, holder.state.mesh_id,
            load_or_create_identity(tmp_path / "b").private_key.public_key(),
            long_ago, dt.timedelta(days=30), BACKDATE,
        )  # fmt: skip
        write_private(b.node_cert_path, ca.cert_pem(expired))
        token = holder.state.tokens().create(
            holder.state.ca_fingerprint, holder.address, 600, time.time()
        )
        identity = load_or_create_identity(tmp_path / "b")
        with pytest.raises(CredentialError):
            await join(token, identity, tmp_path / "b", mesh_config())
        again = await join(token, identity, tmp_path / "b", mesh_config(), rejoin=True)
        assert again.node_id == b.node_id
        now = ca.utcnow()
        reloaded = store.load(tmp_path / "b").node_cert
        assert reloaded.not_valid_before_utc <= now < reloaded.not_valid_after_utc
        # Another mesh's token never replaces a member's credentials, rejoin or not.
        other = await serve(init_holder(tmp_path / "other"))
        try:
            foreign = other.state.tokens().create(
                other.state.ca_fingerprint, other.address, 600, time.time()
            )
            with pytest.raises(CredentialError):
                await join(foreign, identity, tmp_path / "b", mesh_config(), rejoin=True)
            assert store.load(tmp_path / "b").mesh_id == holder.state.mesh_id
            other.state.tokens().check(foreign.token_id, time.time())  # not even spent
        finally:
            await other.streams.close()
    finally:
        await holder.streams.close()
