"""The cost of the mesh's security: sealing gossip, and TLS streams against plain TCP.

Side by side in one run, on loopback:

- µs to seal and to open one gossip datagram (AES-256-GCM, per-sender HKDF key, replay window)
  for a small (SWIM ping, ~100 B) and a full (1400 B packet budget) body, beside the bare
  envelope encode + decode they wrap;
- the round trip of one request on a reused mutual-TLS 1.3 stream (``MeshStreams``) against the
  same length-prefixed envelopes over plain TCP, for 100 B and 64 KiB bodies; and the cost of
  opening a connection (TCP connect vs TCP + TLS 1.3 handshake with mutual Ed25519 certificates).

    python bench/mesh_crypto.py [--packets 20000] [--round-trips 2000] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from bench.report import percentile, write_section
from moltmesh.config import MeshConfig
from moltmesh.mesh import tls
from moltmesh.mesh.drops import DropCounters
from moltmesh.mesh.keyring import KeyRing
from moltmesh.mesh.seal import Opener, Sealer
from moltmesh.mesh.streams import MeshStreams, Peer
from moltmesh.mesh.wire import (
    Channel,
    Envelope,
    decode_envelope,
    encode_envelope,
    encode_frame,
    read_frame,
)
from tests.mesh.helpers import init_holder, join_member, serve

SENDER = "aaaaaaaaaaaaaaaa"
BODIES = {"SWIM ping (100 B)": 100, "full packet (1300 B)": 1300}
STREAM_BODIES = {"100 B": 100, "64 KiB": 64 * 1024}


def per_op_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def bench_seal(packets: int) -> list[tuple[str, float, float, float]]:
    """(case, envelope µs, seal µs, open µs) per body size; open includes the replay check."""
    ring = KeyRing.generate()
    rows = []
    for name, size in BODIES.items():
        env = Envelope("meshmeshmeshmesh", Channel.SWIM, SENDER, bytes(size))
        raw = encode_envelope(env)
        codec_us = per_op_us(lambda env=env: decode_envelope(encode_envelope(env)), packets)
        sealer = Sealer(ring, SENDER, 1)
        sealed = [sealer.seal(raw) for _ in range(packets)]
        fresh = Sealer(ring, SENDER, 2)
        seal_us = per_op_us(lambda raw=raw, fresh=fresh: fresh.seal(raw), packets)
        opener, it = Opener(ring), iter(sealed)
        open_us = per_op_us(lambda opener=opener, it=it: opener.open(next(it)), packets)
        rows.append((name, codec_us, seal_us, open_us))
    return rows


async def echo_server(ctx: ssl.SSLContext | None) -> tuple[asyncio.Server, int]:
    """Echoes length-prefixed envelopes, over TLS when ``ctx`` is given."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (payload := await read_frame(reader)) is not None:
            env = decode_envelope(payload)
            writer.write(encode_frame(Envelope(env.mesh_id, env.channel, "server", env.body)))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


async def loop_round_trips(
    port: int, ctx: ssl.SSLContext | None, body: bytes, n: int
) -> list[float]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="" if ctx else None
    )
    frame = encode_frame(Envelope("m", Channel.INFER, "client", body))
    samples = []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        writer.write(frame)
        await writer.drain()
        decode_envelope(await read_frame(reader))  # type: ignore[arg-type]
        samples.append((time.perf_counter() - t0) * 1e6)
    writer.close()
    return samples[1:]


async def connect_samples(port: int, ctx: ssl.SSLContext | None, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="" if ctx else None
        )
        samples.append((time.perf_counter() - t0) * 1e6)
        writer.close()
    return samples


async def bench_streams(round_trips: int) -> dict[str, dict[str, list[float]]]:
    """µs samples per case: plain TCP, raw mutual TLS (same loop), and ``MeshStreams.request``."""
    out: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        holder = await serve(init_holder(Path(tmp) / "a"))

        async def echo(peer: Peer, env: Envelope) -> bytes:
            return env.body

        holder.streams.handlers[Channel.INFER] = echo
        b_state = await join_member(holder, Path(tmp) / "b")
        client = MeshStreams(b_state, MeshConfig(), DropCounters())
        tcp_server, tcp_port = await echo_server(None)
        tls_server, tls_port = await echo_server(tls.server_context(holder.state, False))
        client_ctx = tls.client_context(b_state)
        try:
            for name, size in STREAM_BODIES.items():
                body = bytes(size)
                mesh = []
                await client.request(holder.node_id, holder.address, Channel.INFER, body)
                for _ in range(round_trips):
                    t0 = time.perf_counter()
                    await client.request(holder.node_id, holder.address, Channel.INFER, body)
                    mesh.append((time.perf_counter() - t0) * 1e6)
                out[f"request {name}"] = {
                    "tcp": await loop_round_trips(tcp_port, None, body, round_trips),
                    "tls": await loop_round_trips(tls_port, client_ctx, body, round_trips),
                    "mesh": mesh,
                }
            n = max(20, round_trips // 20)
            mesh_connect = []
            for _ in range(n):
                t0 = time.perf_counter()
                conn = await client._connect(holder.address, holder.node_id)
                mesh_connect.append((time.perf_counter() - t0) * 1e6)
                conn.writer.close()
            out["connect (+ handshake)"] = {
                "tcp": await connect_samples(tcp_port, None, n),
                "tls": await connect_samples(tls_port, client_ctx, n),
                "mesh": mesh_connect,
            }
        finally:
            tcp_server.close()
            tls_server.close()
            await client.close()
            await holder.streams.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--round-trips", type=int, default=2000)
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args()

    seal_rows = bench_seal(args.packets)
    streams = asyncio.run(bench_streams(args.round_trips))

    console = Console()
    t1 = Table(title="sealed gossip datagram, µs per packet")
    for col in ("body", "envelope enc+dec", "seal", "open", "(seal+open) / envelope"):
        t1.add_column(col)
    lines1 = ["| body | envelope enc+dec µs | seal µs | open µs | (seal+open) / envelope |",
              "|---|---|---|---|---|"]  # fmt: skip
    for name, codec, seal, open_ in seal_rows:
        cells = (
            name,
            f"{codec:.1f}",
            f"{seal:.1f}",
            f"{open_:.1f}",
            f"{(seal + open_) / codec:.1f}×",
        )
        t1.add_row(*cells)
        lines1.append("| " + " | ".join(cells) + " |")
    t2 = Table(title="stream round trip on loopback, µs (p50 / p99)")
    heads = ("case", "plain TCP", "mutual TLS 1.3", "MeshStreams (TLS + checks)", "TLS / TCP (p50)")
    for col in heads:
        t2.add_column(col)
    md_heads = (heads[0], *(f"{h}, µs p50 / p99" for h in heads[1:4]), heads[4])
    lines2 = ["| " + " | ".join(md_heads) + " |", "|---|---|---|---|---|"]
    for name, s in streams.items():
        p = {k: (percentile(v, 50), percentile(v, 99)) for k, v in s.items()}
        cells = (name, *(f"{p[k][0]:.0f} / {p[k][1]:.0f}" for k in ("tcp", "tls", "mesh")),
                 f"{p['tls'][0] / p['tcp'][0]:.1f}×")  # fmt: skip
        t2.add_row(*cells)
        lines2.append("| " + " | ".join(cells) + " |")
    console.print(t1)
    console.print(t2)
    if not args.no_write:
        body = (
            f"{args.packets} packets per case; {args.round_trips} round trips per body size, one "
            "reused connection, one request in flight. Plain TCP and mutual TLS 1.3 run the same "
            "echo loop of length-prefixed envelopes (Ed25519 certificates of one mesh CA); "
            "MeshStreams adds the pool, per-request timeouts, the handler dispatch and the "
            "post-handshake node id / revocation check (in its connect figure).\n\n"
            + "\n".join(lines1)
            + "\n\n"
            + "\n".join(lines2)
            + "\n"
        )
        write_section(
            "mesh_crypto", "Mesh security cost: sealed gossip, TLS streams vs TCP",
            f"python bench/mesh_crypto.py --packets {args.packets} "
            f"--round-trips {args.round_trips}", body,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
