"""A test bed of several hosts on one machine: network namespaces on a Linux bridge.

    with NetBed(3) as bed:                      # hosts bed.hosts[0..2], 10.77.0.1..3/24
        proc = bed.popen(bed.hosts[0], [sys.executable, "-m", "tests.netns.discovery_driver"])
        bed.cut(bed.hosts[0], bed.hosts[1])     # nftables input drop on BOTH sides
        bed.heal(bed.hosts[0], bed.hosts[1])
        bed.limit_egress(bed.hosts[2], rate_kbit=8000)   # tbf
        sock = bed.socket(bed.hosts[1], socket.AF_INET, socket.SOCK_DGRAM)  # lives in h1

Layout: the bridge ``br0`` lives in its own namespace ``<bed>-hub``; each host is a namespace
``<bed>-h<i>`` with ``lo`` and ``eth0`` (a veth whose peer is a port of the bridge), address
``<subnet>.<i+1>/24`` and a route for multicast (224.0.0.0/4) on ``eth0``. Nothing is created in
the root namespace, so the host's real interfaces are never touched and no test traffic can
leave the bed. Bed names are ``mmt<pid>x<counter>``, unique per test run; ``down`` (also run by
the context manager after a failure) kills every process left in the bed and deletes its
namespaces; ``sweep`` removes beds whose creating process is gone (crashed runs).

A cut adds the other side's address to a set dropped by an ``input`` hook in *both* namespaces
(dropping on one side only would let multicast from the other leak through); ``reset=True``
answers TCP with a reset instead, so connects fail at once. The kernel here has no netem: for
delay and jitter use ``tests.netns.delayproxy``.

``unavailable_reason()`` says why the bed cannot run here (not root, a tool missing, namespaces
refused), or None.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "mmt"
DEFAULT_SUBNET = "10.77.0.0/24"  # exists only inside the bed's namespaces
TABLE = "moltmesh_bed"
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_NAME = re.compile(rf"{PREFIX}(\d+)x(\d+)-")
_counter = itertools.count()
_unavailable: list[str | None] = []


class BedError(RuntimeError):
    """A command building or changing the bed failed; the message has its stderr."""


@dataclass(frozen=True)
class Host:
    """One simulated host: namespace ``ns``, index ``index``, address ``address`` on ``eth0``."""

    index: int
    ns: str
    address: str

    @property
    def label(self) -> str:
        return f"h{self.index}"


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
    """Run a command; return stdout, raise ``BedError`` with stderr when it fails."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise BedError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they can (checked once per process)."""
    if _unavailable:
        return _unavailable[0]
    reason: str | None = None
    if not sys.platform.startswith("linux"):
        reason = "network namespaces need Linux"
    elif os.geteuid() != 0:
        reason = "network namespace tests need root"
    else:
        missing = [t for t in ("ip", "nft", "tc") if shutil.which(t) is None]
        if missing:
            reason = f"missing tools: {', '.join(missing)} (apt-get install iproute2 nftables)"
    if reason is None:
        probe = f"{PREFIX}{os.getpid()}x{next(_counter)}-probe"
        try:
            run(["ip", "netns", "add", probe])
            run(["ip", "netns", "exec", probe, "nft", "list", "tables"])
        except (BedError, OSError, subprocess.TimeoutExpired) as e:
            reason = f"cannot create a network namespace with nftables: {e}"
        finally:
            run(["ip", "netns", "del", probe], check=False)
    _unavailable.append(reason)
    return reason


def socket_in(ns: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket created inside namespace ``ns``, usable from this process's event loop.

    A socket belongs to the namespace it was created in; ``setns`` changes only the calling
    thread's namespace, so a short-lived thread enters ``ns``, creates the socket and exits.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    out: dict[str, Any] = {}

    def enter_and_create() -> None:
        try:
            with open(NETNS_DIR / ns, "rb") as f:
                if libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
            out["sock"] = socket.socket(family, type_, proto)
        except BaseException as e:
            out["error"] = e

    thread = threading.Thread(target=enter_and_create, name=f"setns-{ns}")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["sock"]


class NetBed:
    """N hosts on one bridge. Use as a context manager; see the module docstring."""

    def __init__(self, n: int, *, subnet: str = DEFAULT_SUBNET, name: str | None = None) -> None:
        network = ipaddress.ip_network(subnet)
        if n < 1 or n > network.num_addresses - 2:
            raise ValueError(f"cannot fit {n} hosts in {subnet}")
        self.name = name or f"{PREFIX}{os.getpid()}x{next(_counter)}"
        self.hub = f"{self.name}-hub"
        self.prefixlen = network.prefixlen
        self.hosts = [
            Host(i, f"{self.name}-h{i}", str(network.network_address + i + 1)) for i in range(n)
        ]
        self._procs: list[subprocess.Popen[Any]] = []
        self._cuts: dict[tuple[str, str], str] = {}  # (ns, blocked address) -> set name
        self._tables: set[str] = set()
        self._created: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> NetBed:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        """Create the hub with its bridge, then each host wired to it."""
        self._add_ns(self.hub)
        hub = ["ip", "-n", self.hub]
        run([*hub, "link", "set", "lo", "up"])
        run([*hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        run([*hub, "link", "set", "br0", "up"])
        for host in self.hosts:
            self._add_ns(host.ns)
            ns = ["ip", "-n", host.ns]
            port = f"p{host.index}"
            run([*hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", host.ns])  # fmt: skip
            run([*hub, "link", "set", port, "master", "br0", "up"])
            run([*ns, "link", "set", "lo", "up"])
            run([*ns, "addr", "add", f"{host.address}/{self.prefixlen}", "dev", "eth0"])
            run([*ns, "link", "set", "eth0", "up"])
            run([*ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])

    def _add_ns(self, ns: str) -> None:
        run(["ip", "netns", "add", ns])
        self._created.append(ns)

    def down(self) -> None:
        """Kill every process in the bed and delete its namespaces. Idempotent."""
        for proc in self._procs:
            _terminate(proc)
        self._procs.clear()
        for ns in reversed(self._created):
            _kill_ns_processes(ns)
            run(["ip", "netns", "del", ns], check=False)
        self._created.clear()
        self._cuts.clear()
        self._tables.clear()

    # -- running things inside -------------------------------------------------------------

    def popen(self, host: Host, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``host`` (``ip netns exec``); it is killed by ``down``."""
        proc = subprocess.Popen(["ip", "netns", "exec", host.ns, *argv], **kwargs)
        self._procs.append(proc)
        return proc

    def run(self, host: Host, argv: Sequence[str], *, check: bool = True) -> str:
        """Run ``argv`` inside ``host`` to completion; return its stdout."""
        return run(["ip", "netns", "exec", host.ns, *argv], check=check)

    def socket(self, host: Host, family: int, type_: int, proto: int = 0) -> socket.socket:
        """A socket inside ``host`` for use in this process (see ``socket_in``)."""
        return socket_in(host.ns, family, type_, proto)

    # -- faults ----------------------------------------------------------------------------

    def cut(self, a: Host, b: Host, *, reset: bool = False) -> None:
        """Drop everything between ``a`` and ``b`` (both directions, multicast included).

        ``reset=True``: TCP from the other side is answered with a reset (connects fail at
        once); everything else is still dropped, except the resets themselves, which must reach
        the side that connected.
        """
        kind = "cut_reset" if reset else "cut_drop"
        for here, there in ((a, b), (b, a)):
            self._ensure_table(here.ns)
            key = (here.ns, there.address)
            if self._cuts.get(key) == kind:
                continue
            if key in self._cuts:
                self._nft(here.ns, "delete", "element", "inet", TABLE, self._cuts[key],
                          f"{{ {there.address} }}")  # fmt: skip
            self._nft(here.ns, "add", "element", "inet", TABLE, kind, f"{{ {there.address} }}")
            self._cuts[key] = kind

    def heal(self, a: Host, b: Host) -> None:
        """Undo ``cut(a, b)``; a no-op where there is no cut."""
        for here, there in ((a, b), (b, a)):
            kind = self._cuts.pop((here.ns, there.address), None)
            if kind is not None:
                self._nft(here.ns, "delete", "element", "inet", TABLE, kind,
                          f"{{ {there.address} }}")  # fmt: skip

    def partition(
        self, side: Sequence[Host], other: Sequence[Host], *, reset: bool = False
    ) -> None:
        """Cut every link between the two groups."""
        for a in side:
            for b in other:
                self.cut(a, b, reset=reset)

    def heal_all(self) -> None:
        """Remove every cut (deletes the nftables table in each host)."""
        for ns in sorted(self._tables):
            self._nft(ns, "delete", "table", "inet", TABLE)
        self._tables.clear()
        self._cuts.clear()

    def limit_egress(
        self, host: Host, *, rate_kbit: int, burst_bytes: int = 16_000, latency_ms: int = 200
    ) -> None:
        """Shape what ``host`` sends on ``eth0`` with a token bucket filter (tbf)."""
        run(["tc", "-n", host.ns, "qdisc", "replace", "dev", "eth0", "root", "tbf",
             "rate", f"{rate_kbit}kbit", "burst", str(burst_bytes),
             "latency", f"{latency_ms}ms"])  # fmt: skip

    def unlimit_egress(self, host: Host) -> None:
        run(["tc", "-n", host.ns, "qdisc", "del", "dev", "eth0", "root"], check=False)

    def _ensure_table(self, ns: str) -> None:
        if ns in self._tables:
            return
        ruleset = f"""
table inet {TABLE} {{
    set cut_drop {{ type ipv4_addr; }}
    set cut_reset {{ type ipv4_addr; }}
    chain input {{
        type filter hook input priority 0; policy accept;
        ip saddr @cut_reset tcp flags & rst == rst accept
        ip saddr @cut_reset meta l4proto tcp reject with tcp reset
        ip saddr @cut_reset drop
        ip saddr @cut_drop drop
    }}
}}
"""
        done = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset,
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        if done.returncode != 0:
            raise BedError(f"nft ruleset in {ns} failed: {done.stderr.strip()}")
        self._tables.add(ns)

    def _nft(self, ns: str, *args: str) -> None:
        run(["ip", "netns", "exec", ns, "nft", *args])


def _terminate(proc: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace_s)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _kill_ns_processes(ns: str) -> None:
    out = run(["ip", "netns", "pids", ns], check=False)
    for pid in (int(p) for p in out.split() if p.isdigit()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(*, everything: bool = False) -> list[str]:
    """Delete leftover bed namespaces whose creating process is gone; return their names.

    ``everything=True`` deletes every bed namespace, live or not (for a person cleaning up).
    """
    if not NETNS_DIR.is_dir():
        return []
    removed = []
    for ns in sorted(p.name for p in NETNS_DIR.iterdir()):
        match = _NAME.match(ns)
        if match is None or (not everything and _alive(int(match.group(1)))):
            continue
        _kill_ns_processes(ns)
        run(["ip", "netns", "del", ns], check=False)
        removed.append(ns)
    return removed


def bed_namespaces() -> list[str]:
    """Names of all bed namespaces present now (any run)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if _NAME.match(p.name))


if __name__ == "__main__":
    if sys.argv[1:] == ["sweep"]:
        print("\n".join(sweep()) or "nothing to sweep")
    elif sys.argv[1:] == ["sweep", "--all"]:
        print("\n".join(sweep(everything=True)) or "nothing to sweep")
    else:
        print("usage: python -m tests.netns.bed sweep [--all]", file=sys.stderr)
        sys.exit(2)
