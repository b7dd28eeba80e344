"""The cluster KV and Raft status over the node's HTTP API (aiohttp).

    GET    /v1/kv/{key}?consistency=stale|linearizable      one key (404 when absent)
    GET    /v1/kv?prefix=P                                  prefix list
    GET    /v1/kv/{key}?watch=1&since=REV[&prefix=1][&timeout=S]   long-poll watch (410: compacted)
    PUT    /v1/kv/{key}[?cas=MOD_REV]   body = value        put, or CAS on the mod revision
                                                            (0 = only if absent; 409 on mismatch)
    DELETE /v1/kv/{key}
    GET    /v1/raft/status          the driver's view, ``kv_revision`` (of the copy this node
                                    reads: the Raft one on a member, the followed one
                                    elsewhere), ``mesh_sync`` (revocation serials
                                    held and in the KV, the mesh config) and ``transfer``
                                    (snapshot chunks, refused snapshots, oversize messages)

Status codes: 503 = not applied (no quorum, no leader; ``reason`` says which), 504 = outcome
unknown (the deadline passed after the write left). Values are returned as UTF-8 text in
``value`` (replacement characters where not text) and exactly in ``value_b64``.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from aiohttp import web

from consensus.errors import EncodeError
from consensus.kv_types import MAX_COMMAND_BYTES, CompactedRevisionError, Event, KeyValue
from moltmesh.api import read_body
from moltmesh.raft.driver import OutcomeUnknown, Unavailable
from moltmesh.raft.kvservice import CasMismatch, ReplyTooLarge, WriteResult
from moltmesh.raft.runtime import RaftRuntime


@dataclass
class RaftRef:
    """The API's view of the node's Raft: ``runtime`` while it runs; ``state`` says why not
    otherwise ("absent": no mesh here, "starting", "stopping")."""

    runtime: RaftRuntime | None = None
    state: str = "absent"


_NO_RAFT = {
    "absent": "no Raft here: this node is not part of a mesh",
    "starting": "not applied: Raft is starting on this node; try again shortly",
    "stopping": "not applied: this node is stopping",
}


RAFT_REF = web.AppKey("raft_ref", RaftRef)


def kv_json(kv: KeyValue | None) -> dict[str, object] | None:
    if kv is None:
        return None
    return {
        "key": kv.key,
        "value": kv.value.decode("utf-8", "replace"),
        "value_b64": base64.b64encode(kv.value).decode(),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    }


def event_json(e: Event) -> dict[str, object]:
    return {"type": e.kind.name.lower(), "key": e.key, "revision": e.revision,
            "kv": kv_json(e.kv), "prev": kv_json(e.prev)}  # fmt: skip


MAX_TIMEOUT_S = 3600.0
U64_MAX = 2**64 - 1


def _runtime(request: web.Request) -> RaftRuntime:
    ref = request.app[RAFT_REF]
    if ref.runtime is None:  # (the API's middleware turns the reason into the JSON error)
        raise web.HTTPServiceUnavailable(reason=_NO_RAFT.get(ref.state, _NO_RAFT["absent"]))
    return ref.runtime


def _timeout(request: web.Request, default: float) -> float:
    """The ``timeout`` parameter: seconds, finite, above 0 and at most ``MAX_TIMEOUT_S``."""
    raw = request.query.get("timeout")
    if raw is None:
        return default
    try:
        t = float(raw)
    except ValueError:
        t = math.nan
    if not (0 < t <= MAX_TIMEOUT_S):  # (NaN fails every comparison)
        raise web.HTTPBadRequest(
            reason=f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}"
        )
    return t


def _revision(request: web.Request, name: str, default: int) -> int:
    """A revision parameter (``since``, ``cas``): an integer from 0 to 2^64 - 1."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= U64_MAX:
        raise web.HTTPBadRequest(reason=f"{name} must be a revision: an integer from 0 to 2^64-1")
    return value


def _key(request: web.Request) -> str:
    """The ``{key}`` of the path ("" when the route has none), refused (400) unless its
    percent-decoded bytes are UTF-8 without control characters: aiohttp decodes what is not
    UTF-8 to replacement characters, so two different raw keys would name one stored key."""
    key = request.match_info.get("key", "")
    if not key:
        return key
    raw = request.rel_url.raw_path.partition("/v1/kv/")[2]
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(reason="the key must be UTF-8 text once percent-decoded") from None
    if any(c < " " or c == "\x7f" for c in decoded):
        raise web.HTTPBadRequest(reason="the key must not contain control characters")
    return key


def _too_large(e: EncodeError) -> web.Response:
    return web.json_response(
        {"error": "too large", "reason": str(e), "limit_bytes": MAX_COMMAND_BYTES}, status=413
    )


def _unavailable(e: Unavailable) -> web.Response:
    return web.json_response(
        {"error": "not applied", "reason": e.reason, "leader": e.leader}, status=503
    )


def _write_json(r: WriteResult) -> dict[str, object]:
    return {"revision": r.revision, "prev": kv_json(r.prev), "changed": r.changed}


async def get_key(request: web.Request) -> web.Response:
    rt = _runtime(request)
    key = _key(request)
    q = request.query
    consistency = q.get("consistency", "linearizable")
    if consistency not in ("linearizable", "stale"):
        return web.json_response({"error": "consistency is stale or linearizable"}, status=400)
    prefix = q.get("prefix")
    if "watch" in q and not key and prefix is None:
        prefix = ""  # no key and no prefix: every key
    timeout = _timeout(request, 30.0 if "watch" in q else rt.kv.default_timeout)
    try:
        if "watch" in q:
            since = _revision(request, "since", 0)
            events, rev = await rt.kv.watch(
                prefix if prefix is not None and not key else key, since,
                exact=not (prefix is not None), timeout=timeout,
            )  # fmt: skip
            return web.json_response({"events": [event_json(e) for e in events], "revision": rev})
        if not key or prefix is not None:
            items, rev = await rt.kv.list(
                key or prefix or "", consistency=consistency, timeout=timeout
            )
            return web.json_response({"kvs": [kv_json(i) for i in items], "revision": rev})
        kv, rev = await rt.kv.get(key, consistency=consistency, timeout=timeout)
    except CompactedRevisionError as e:
        return web.json_response({"error": str(e), "compacted": e.compacted}, status=410)
    except Unavailable as e:
        return _unavailable(e)
    except ReplyTooLarge as e:
        return web.json_response({"error": "answer too large", "reason": str(e)}, status=413)
    if kv is None:
        return web.json_response({"error": "not found", "key": key, "revision": rev}, status=404)
    return web.json_response({**(kv_json(kv) or {}), "revision": rev})


async def put_key(request: web.Request) -> web.Response:
    rt = _runtime(request)
    key = _key(request)
    value = await read_body(request)
    timeout = _timeout(request, rt.kv.default_timeout)
    expected = _revision(request, "cas", -1)
    try:
        if expected >= 0:
            r = await rt.kv.cas(key, expected, value, timeout=timeout)
        else:
            r = await rt.kv.put(key, value, timeout=timeout)
    except EncodeError as e:  # the key and value do not fit one command
        return _too_large(e)
    except CasMismatch as e:
        return web.json_response(
            {"error": "cas failed", "current": e.current, "revision": e.revision}, status=409
        )
    except Unavailable as e:
        return _unavailable(e)
    except OutcomeUnknown as e:
        return web.json_response({"error": "outcome unknown", "reason": str(e)}, status=504)
    except ValueError as e:
        return web.json_response({"error": str(e)}, status=400)
    return web.json_response(_write_json(r))


async def delete_key(request: web.Request) -> web.Response:
    rt = _runtime(request)
    timeout = _timeout(request, rt.kv.default_timeout)
    try:
        r = await rt.kv.delete(_key(request), timeout=timeout)
    except EncodeError as e:
        return _too_large(e)
    except Unavailable as e:
        return _unavailable(e)
    except OutcomeUnknown as e:
        return web.json_response({"error": "outcome unknown", "reason": str(e)}, status=504)
    return web.json_response(_write_json(r))


async def raft_status(request: web.Request) -> web.Response:
    rt = _runtime(request)
    doc = {**rt.status(), "kv_revision": rt.kv.local.revision}
    doc["mesh_sync"], doc["transfer"] = rt.meshsync.status(), rt.kv.transfer_status()
    return web.json_response(doc)


def add_raft_routes(app: web.Application, ref: RaftRef) -> None:
    app[RAFT_REF] = ref
    app.router.add_get("/v1/kv", get_key)
    app.router.add_get(r"/v1/kv/{key:[\s\S]+}", get_key)
    app.router.add_put(r"/v1/kv/{key:[\s\S]+}", put_key)
    app.router.add_delete(r"/v1/kv/{key:[\s\S]+}", delete_key)
    app.router.add_get("/v1/raft/status", raft_status)
