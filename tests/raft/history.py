"""Concurrent KV clients over HTTP that record a history for ``sim.linearizability``."""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
import time
import urllib.error
from collections.abc import Callable

from sim.linearizability import Operation
from tests.integration.nodeproc import NodeProcess
from tests.raft.procs import http as http_proc


def now_us() -> int:
    return time.monotonic_ns() // 1000


class Recorder:
    """Thread-safe history. 503 answers are left out: they promise the write was not applied
    (so the checker tests that promise); 504 and transport errors are "outcome unknown"."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self.acked: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()

    def add(self, op: Operation) -> None:
        with self._lock:
            self.ops.append(op)

    def next_id(self) -> int:
        return next(self._ids)


Call = Callable[..., tuple[int, dict]]


def client(rec: Recorder, cid: int, node: NodeProcess | Call, seed: int, stop: threading.Event,
           keys: tuple[str, ...] = ("k1", "k2", "k3", "k4", "k5", "k6")) -> None:  # fmt: skip
    """Random put/cas/get on ``keys`` through ``node`` (a process, or a function with the
    signature of ``procs.http`` minus the node) until ``stop``."""
    rng = random.Random(seed)
    if isinstance(node, NodeProcess):
        proc = node

        def http(_: object, method: str, path: str, body: bytes | None = None,
                 timeout: float = 30.0) -> tuple[int, dict]:  # fmt: skip
            return http_proc(proc, method, path, body, timeout)

        dead = lambda: proc.proc.poll() is not None  # noqa: E731
    else:
        fn = node

        def http(_: object, method: str, path: str, body: bytes | None = None,
                 timeout: float = 30.0) -> tuple[int, dict]:  # fmt: skip
            return fn(method, path, body, timeout)

        dead = lambda: False  # noqa: E731
    n = 0
    while not stop.is_set():
        n += 1
        key = rng.choice(keys)
        kind = rng.choice(("put", "put", "cas", "get", "get"))
        value = f"{cid}-{n}".encode()
        call = now_us()
        try:
            if kind == "get":
                code, body = http(node, "GET", f"/v1/kv/{key}", timeout=10)
            elif kind == "put":
                code, body = http(node, "PUT", f"/v1/kv/{key}?timeout=3", value, timeout=10)
            else:
                exp = rng.choice((0, 0, rng.randint(1, 50)))
                code, body = http(node, "PUT", f"/v1/kv/{key}?cas={exp}&timeout=3", value,
                                  timeout=10)  # fmt: skip
        except urllib.error.URLError as e:
            if isinstance(e.reason, ConnectionRefusedError):
                if dead():
                    return  # our node is dead: this client is done
                continue  # never reached the node: no effect
            code, body = 0, {}
        except OSError:
            code, body = 0, {}
        ret: int | None = now_us()
        if code == 503:
            continue  # not applied (the history checks that claim by leaving it out)
        if code in (0, 504) or code >= 500:
            ret = None
        oid = rec.next_id()
        if kind == "get":
            if ret is None:
                continue
            if code == 404:
                res: tuple[bytes | None, int] = (None, 0)
            else:
                res = (body["value"].encode(), body["mod_revision"])
            rec.add(Operation(oid, cid, "get", key, call, ret, result=res,
                              revision=body.get("revision")))  # fmt: skip
        elif kind == "put":
            rec.add(Operation(oid, cid, "put", key, call, ret, value=value,
                              index=body.get("revision") if ret else None))  # fmt: skip
        else:
            ok = code == 200 if ret else None
            rec.add(Operation(
                oid, cid, "cas", key, call, ret, value=value, expected=exp,
                index=body.get("revision") if ok else None, ok=ok,
                current=body.get("current") if code == 409 else None,
            ))  # fmt: skip


def resolve_unknown_indices(ops: list[Operation]) -> list[Operation]:
    """Give an unknown-outcome write the index a read saw its (unique) value at.

    Values are unique per write, so a read of value ``v`` at mod revision ``m`` proves the
    write of ``v`` took effect at index ``m``. (``sim.linearizability`` checks reads at a
    revision only against writes whose index is known.)"""
    seen: dict[tuple[str, bytes], int] = {}
    for op in ops:
        if op.kind == "get" and op.result is not None and op.result[0] is not None:
            seen[(op.key, op.result[0])] = op.result[1]
    out = []
    for op in ops:
        if op.kind in ("put", "cas") and op.ret is None and op.index is None:
            index = seen.get((op.key, op.value or b""))
            if index is not None:
                op = dataclasses.replace(op, index=index)
        out.append(op)
    return out
