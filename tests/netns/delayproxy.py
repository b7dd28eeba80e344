"""A small userspace delay proxy: forwards TCP and UDP, adding delay and jitter each way.

The kernel here has no netem, so links with latency are made by pointing peers at this proxy.

    proxy = DelayProxy(("10.77.0.1", 0), ("10.77.0.2", 9000), delay_s=0.05, jitter_s=0.01, seed=7)
    await proxy.start()        # proxy.tcp_port / proxy.udp_port are the bound ports
    ...
    await proxy.stop()

Every chunk of bytes (TCP) or datagram (UDP) is held for ``delay_s`` plus a uniform jitter in
``[-jitter_s, +jitter_s]`` (never below zero) drawn from ``random.Random(seed)``. TCP keeps byte
order: a chunk never overtakes the one before it, so jitter stretches gaps but cannot reorder.
UDP datagrams are delayed independently and may be reordered by jitter, as on a real network.
Each UDP client gets its own upstream socket, so replies find their way back. ``sock_factory``
(``NetBed.socket``-like: ``(family, type) -> socket``) puts the proxy's sockets in a namespace.

Run standalone inside a namespace:

    python -m tests.netns.delayproxy --listen 10.77.0.1:9000 --target 10.77.0.2:9000 \
        --delay-ms 50 --jitter-ms 10 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import socket
import sys
from collections.abc import Callable

Address = tuple[str, int]
SockFactory = Callable[[int, int], socket.socket]
CHUNK = 65536


def _default_factory(family: int, type_: int) -> socket.socket:
    return socket.socket(family, type_)


class DelayProxy:
    """TCP and UDP forwarder with delay and jitter; see the module docstring."""

    def __init__(
        self,
        listen: Address,
        target: Address,
        *,
        delay_s: float,
        jitter_s: float = 0.0,
        seed: int = 0,
        tcp: bool = True,
        udp: bool = True,
        sock_factory: SockFactory = _default_factory,
    ) -> None:
        if delay_s < 0 or jitter_s < 0:
            raise ValueError("delay and jitter must be non-negative")
        self.listen, self.target = listen, target
        self.delay_s, self.jitter_s = delay_s, jitter_s
        self.rng = random.Random(seed)
        self._want_tcp, self._want_udp = tcp, udp
        self._factory = sock_factory
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._upstreams: dict[Address, asyncio.DatagramTransport] = {}
        self.tcp_port = 0
        self.udp_port = 0
        self.forwarded_bytes = 0
        self.forwarded_datagrams = 0

    def hold(self) -> float:
        """One draw of how long to hold a chunk or datagram."""
        jitter = self.rng.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else 0.0
        return max(0.0, self.delay_s + jitter)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._want_tcp:
            sock = self._factory(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self.listen)
            sock.listen(64)
            sock.setblocking(False)
            self._server = await asyncio.start_server(self._accept, sock=sock)
            self.tcp_port = sock.getsockname()[1]
        if self._want_udp:
            sock = self._factory(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.listen[0], self.tcp_port or self.listen[1]))
            sock.setblocking(False)
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _ClientSide(self), sock=sock)
            self.udp_port = sock.getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        for transport in [self._udp, *self._upstreams.values()]:
            if transport is not None:
                transport.close()
        self._udp = None
        self._upstreams.clear()

    # -- TCP -------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            sock = self._factory(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, self.target)
            except OSError:
                sock.close()
                return
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy reader to writer, each chunk released at its due time, in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # the delay this proxy exists to add
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                self.forwarded_bytes += len(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        last_due = 0.0
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""
                last_due = max(last_due, loop.time() + self.hold())
                queue.put_nowait((last_due, data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.CancelledError):
            sender.cancel()
            raise

    # -- UDP -------------------------------------------------------------------------------

    def _from_client(self, data: bytes, client: Address) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(self.hold(), self._send_up, data, client)

    def _send_up(self, data: bytes, client: Address) -> None:
        upstream = self._upstreams.get(client)
        if upstream is None:
            task = asyncio.get_running_loop().create_task(self._open_upstream(data, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        upstream.sendto(data)
        self.forwarded_datagrams += 1

    async def _open_upstream(self, first: bytes, client: Address) -> None:
        if client not in self._upstreams:
            sock = self._factory(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(self.target)
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _UpstreamSide(self, client), sock=sock
            )
            self._upstreams[client] = transport
        self._upstreams[client].sendto(first)
        self.forwarded_datagrams += 1

    def _from_upstream(self, data: bytes, client: Address) -> None:
        asyncio.get_running_loop().call_later(self.hold(), self._send_down, data, client)

    def _send_down(self, data: bytes, client: Address) -> None:
        if self._udp is not None:
            self._udp.sendto(data, client)
            self.forwarded_datagrams += 1


class _ClientSide(asyncio.DatagramProtocol):
    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.proxy._from_client(data, addr)


class _UpstreamSide(asyncio.DatagramProtocol):
    def __init__(self, proxy: DelayProxy, client: Address) -> None:
        self.proxy, self.client = proxy, client

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.proxy._from_upstream(data, self.client)


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _main(args: argparse.Namespace) -> None:
    proxy = DelayProxy(_address(args.listen), _address(args.target), delay_s=args.delay_ms / 1000,
                       jitter_s=args.jitter_ms / 1000, seed=args.seed)  # fmt: skip
    await proxy.start()
    print(f"proxy tcp {proxy.tcp_port} udp {proxy.udp_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="TCP+UDP forwarder with delay and jitter")
    parser.add_argument("--listen", required=True, help="host:port (port 0: any)")
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(_main(parser.parse_args()))
    sys.exit(0)
