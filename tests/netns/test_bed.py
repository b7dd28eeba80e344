"""The test bed itself: reachability, teardown, cuts (both ways, multicast too), heal, reset,
tbf and the delay proxy. Sockets live in the bed's namespaces but are driven from this process.

"Dropped" is shown against a witness: the blocked datagram is sent first, then one from a host
that is not cut; the witness arriving alone (and nothing else within a short drain) is the
evidence. Time bounds here are lower bounds (a slow machine only makes them easier to meet).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from tests.netns.bed import Host, NetBed, bed_namespaces, sweep
from tests.netns.delayproxy import DelayProxy

GROUP = "239.77.0.1"
PORT = 9400
RECV_S = 5.0  # failure bound for something that must arrive
DRAIN_S = 0.3  # how long to listen for something that must not arrive, after the witness

pytestmark = pytest.mark.netns


def _udp_receiver(bed: NetBed, host: Host, *, multicast: bool = False) -> socket.socket:
    s = bed.socket(host, socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if multicast:
        s.bind((GROUP, PORT + 1))
        mreq = socket.inet_aton(GROUP) + socket.inet_aton(host.address)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    else:
        s.bind((host.address, PORT))
    s.settimeout(RECV_S)
    return s


def _udp_sender(bed: NetBed, host: Host) -> socket.socket:
    s = bed.socket(host, socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(host.address))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("B", 1))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)  # not to our own receivers
    return s


def _received(receiver: socket.socket, witness: bytes) -> set[bytes]:
    """Everything that arrives up to and including ``witness``, plus a short drain after it."""
    got: set[bytes] = set()
    receiver.settimeout(RECV_S)
    while witness not in got:
        got.add(receiver.recvfrom(2048)[0])
    receiver.settimeout(DRAIN_S)
    try:
        while True:
            got.add(receiver.recvfrom(2048)[0])
    except TimeoutError:
        pass
    return got


def _tcp_connect(bed: NetBed, host: Host, target: tuple[str, int], timeout: float) -> None:
    s = bed.socket(host, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(target)
    finally:
        s.close()


def test_hosts_reach_each_other_and_teardown_removes_everything() -> None:
    with NetBed(2) as bed:
        a, b = bed.hosts
        assert (a.address, b.address) == ("10.77.0.1", "10.77.0.2")
        names = [n for n in bed_namespaces() if n.startswith(bed.name + "-")]
        assert sorted(names) == sorted([bed.hub, a.ns, b.ns])
        rb, sa = _udp_receiver(bed, b), _udp_sender(bed, a)
        sa.sendto(b"ping", (b.address, PORT))
        assert rb.recvfrom(64)[0] == b"ping"
        sleeper = bed.popen(a, [sys.executable, "-c", "import time; time.sleep(600)"])
        for s in (rb, sa):
            s.close()
    assert sleeper.poll() is not None  # processes inside are killed
    assert not [n for n in bed_namespaces() if n.startswith(bed.name + "-")]


def test_teardown_happens_after_a_failure_inside_the_bed() -> None:
    with pytest.raises(RuntimeError, match="boom"), NetBed(1) as bed:
        raise RuntimeError("boom")
    assert not [n for n in bed_namespaces() if n.startswith(bed.name + "-")]


def test_the_host_root_namespace_is_never_touched() -> None:
    before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    with NetBed(2):
        during = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert before.count("\n") == during.count("\n")  # no bridge or veth appeared here


def test_cut_blocks_both_ways_including_multicast_and_heal_restores(make_bed: Callable) -> None:
    bed = make_bed(3)
    a, b, c = bed.hosts
    ra, rb = _udp_receiver(bed, a), _udp_receiver(bed, b)
    ma, mb = _udp_receiver(bed, a, multicast=True), _udp_receiver(bed, b, multicast=True)
    sa, sb, sc = _udp_sender(bed, a), _udp_sender(bed, b), _udp_sender(bed, c)
    bed.cut(a, b)
    sb.sendto(b"b->a", (a.address, PORT))
    sa.sendto(b"a->b", (b.address, PORT))
    sb.sendto(b"b->group", (GROUP, PORT + 1))
    sa.sendto(b"a->group", (GROUP, PORT + 1))
    sc.sendto(b"c->a", (a.address, PORT))
    sc.sendto(b"c->b", (b.address, PORT))
    sc.sendto(b"c->group", (GROUP, PORT + 1))
    assert _received(ra, b"c->a") == {b"c->a"}
    assert _received(rb, b"c->b") == {b"c->b"}
    assert _received(ma, b"c->group") == {b"c->group"}  # b's multicast did not leak to a
    assert _received(mb, b"c->group") == {b"c->group"}
    with pytest.raises(TimeoutError):  # dropped, not refused
        _tcp_connect(bed, b, (a.address, PORT), timeout=DRAIN_S)

    bed.heal(a, b)
    sb.sendto(b"b->a again", (a.address, PORT))
    sa.sendto(b"a->group again", (GROUP, PORT + 1))
    assert ra.recvfrom(64)[0] == b"b->a again"
    assert mb.recvfrom(64)[0] == b"a->group again"


def test_cut_with_reset_refuses_tcp_at_once_and_still_drops_udp(make_bed: Callable) -> None:
    bed = make_bed(3)
    a, b, c = bed.hosts
    listener = bed.socket(a, socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((a.address, PORT))
    listener.listen()
    _tcp_connect(bed, b, (a.address, PORT), timeout=RECV_S)  # reachable before the cut
    bed.cut(a, b, reset=True)
    with pytest.raises(ConnectionRefusedError):
        _tcp_connect(bed, b, (a.address, PORT), timeout=RECV_S)
    ra, sb, sc = _udp_receiver(bed, a), _udp_sender(bed, b), _udp_sender(bed, c)
    sb.sendto(b"b->a", (a.address, PORT))
    sc.sendto(b"c->a", (a.address, PORT))
    assert _received(ra, b"c->a") == {b"c->a"}
    bed.heal_all()
    _tcp_connect(bed, b, (a.address, PORT), timeout=RECV_S)


def _tcp_transfer_seconds(bed: NetBed, src: Host, dst: Host, nbytes: int) -> float:
    server = bed.socket(dst, socket.AF_INET, socket.SOCK_STREAM)
    server.bind((dst.address, PORT + 2))
    server.listen()
    received = []

    def sink() -> None:
        conn, _ = server.accept()
        total = 0
        while chunk := conn.recv(65536):
            total += len(chunk)
        received.append(total)
        conn.close()

    reader = threading.Thread(target=sink)
    reader.start()
    client = bed.socket(src, socket.AF_INET, socket.SOCK_STREAM)
    client.connect((dst.address, PORT + 2))
    start = time.monotonic()
    client.sendall(os.urandom(nbytes))
    client.shutdown(socket.SHUT_WR)
    reader.join(60)
    elapsed = time.monotonic() - start
    client.close()
    server.close()
    assert received == [nbytes]
    return elapsed


def test_tbf_limits_bandwidth(make_bed: Callable) -> None:
    bed = make_bed(2)
    a, b = bed.hosts
    bed.limit_egress(a, rate_kbit=4000)  # 500 kB/s: 600 kB take about 1.2 s
    elapsed = _tcp_transfer_seconds(bed, a, b, 600_000)
    assert elapsed >= 0.8, f"600 kB at 4 Mbit/s took only {elapsed:.2f} s"
    bed.unlimit_egress(a)


async def test_delay_proxy_adds_delay_each_way_and_keeps_tcp_order(make_bed: Callable) -> None:
    bed = make_bed(3)
    client_host, proxy_host, server_host = bed.hosts
    delay, jitter, seed = 0.1, 0.02, 1234
    loop = asyncio.get_running_loop()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    tcp = bed.socket(server_host, socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind((server_host.address, PORT))
    tcp.listen()
    tcp.setblocking(False)
    server = await asyncio.start_server(echo, sock=tcp)

    class UdpEcho(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    udp = bed.socket(server_host, socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((server_host.address, PORT))
    udp_server, _ = await loop.create_datagram_endpoint(UdpEcho, sock=udp)

    proxy = DelayProxy((proxy_host.address, 0), (server_host.address, PORT), delay_s=delay,
                       jitter_s=jitter, seed=seed,
                       sock_factory=lambda f, t: bed.socket(proxy_host, f, t))  # fmt: skip
    await proxy.start()
    try:
        # TCP: round trip through the proxy takes at least two holds; bytes stay in order
        s = bed.socket(client_host, socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        await loop.sock_connect(s, (proxy_host.address, proxy.tcp_port))
        reader, writer = await asyncio.open_connection(sock=s)
        start = loop.time()
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), 10) == b"x"
        rtt = loop.time() - start
        assert rtt >= 2 * (delay - jitter), f"seed {seed}: TCP round trip {rtt:.3f} s"
        chunks = [bytes([i]) * 1000 for i in range(50)]
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        echoed = await asyncio.wait_for(reader.readexactly(50_000), 30)
        assert echoed == b"".join(chunks), f"seed {seed}: TCP bytes reordered"
        writer.close()

        # UDP: same lower bound on the round trip
        u = bed.socket(client_host, socket.AF_INET, socket.SOCK_DGRAM)
        u.setblocking(False)
        u.connect((proxy_host.address, proxy.udp_port))
        start = loop.time()
        await loop.sock_sendall(u, b"hello")
        assert await asyncio.wait_for(loop.sock_recv(u, 64), 10) == b"hello"
        rtt = loop.time() - start
        assert rtt >= 2 * (delay - jitter), f"seed {seed}: UDP round trip {rtt:.3f} s"
        u.close()
    finally:
        await proxy.stop()
        server.close()
        udp_server.close()


def test_sweep_removes_leftovers_of_a_dead_run_only() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = NetBed(1, name=f"mmt{dead.pid}x0")
    leftover.up()  # a crashed run's bed: never torn down by its creator
    try:
        with NetBed(1) as mine:
            sweep()
            left = bed_namespaces()
            assert not [n for n in left if n.startswith(leftover.name + "-")]
            assert mine.hosts[0].ns in left  # a live run's bed is not swept
    finally:
        leftover.down()
