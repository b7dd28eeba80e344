"""``moltmesh kv get|put|del|ls|watch``: the cluster KV through the node running on this data
directory (its HTTP API). Exit codes: 0 done, 1 not found / CAS mismatch, 3 not applied (503:
no quorum), 4 outcome unknown (504)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any


def add_parser(sub: Any) -> None:
    from moltmesh.cli import add_node_config_flags

    kv = sub.add_parser(
        "kv", help="read and write the cluster KV (strongly consistent, replicated by Raft)",
        description="Talks to the node running on --data-dir. Reads are linearizable unless "
        "--stale (the local copy, served even without quorum).",
    )  # fmt: skip
    ksub = kv.add_subparsers(dest="kv_command", metavar="ACTION", required=True)
    get = ksub.add_parser("get", help="print a key's value")
    get.add_argument("key")
    get.add_argument("--stale", action="store_true", help="read the local copy")
    get.add_argument("--json", action="store_true", help="print the whole record")
    put = ksub.add_parser("put", help="set a key (value from the argument, or - for stdin)")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--cas", type=int, help="only if the key's mod revision is this (0: absent)")
    dele = ksub.add_parser("del", help="delete a key")
    dele.add_argument("key")
    ls = ksub.add_parser("ls", help="list keys under a prefix")
    ls.add_argument("prefix", nargs="?", default="")
    ls.add_argument("--stale", action="store_true")
    watch = ksub.add_parser("watch", help="print changes as they happen (one JSON per line)")
    watch.add_argument("key")
    watch.add_argument("--prefix", action="store_true", help="every key under KEY")
    watch.add_argument("--since", type=int, default=0, help="from this revision (0: from now)")
    watch.add_argument("--count", type=int, default=0,
                       help="stop after this many events, at the end of a revision (writes "
                       "that reach the leader together share one)")  # fmt: skip
    for p in (get, put, dele, ls, watch):
        add_node_config_flags(p)
        p.set_defaults(func=cmd_kv)


def _call(args: argparse.Namespace, method: str, path: str, body: bytes | None = None,
          timeout: float = 60.0) -> tuple[int, dict[str, Any]]:  # fmt: skip
    import urllib.error
    import urllib.request

    from moltmesh.cli import config_from
    from moltmesh.client import ClientError, local_endpoint

    url, token = local_endpoint(config_from(args).data_dir)
    req = urllib.request.Request(url + path, data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except urllib.error.URLError as e:
        raise ClientError(0, f"cannot reach {url}: {e.reason}") from None


def _fail(code: int, body: dict[str, Any]) -> int:
    reason = body.get("reason") or body.get("error") or "failed"
    print(f"error ({code}): {reason}", file=sys.stderr)
    return {404: 1, 409: 1, 503: 3, 504: 4}.get(code, 2)


def cmd_kv(args: argparse.Namespace) -> int:
    q = urllib.parse.quote
    action = args.kv_command
    if action == "get":
        stale = "?consistency=stale" if args.stale else ""
        code, body = _call(args, "GET", f"/v1/kv/{q(args.key)}{stale}")
        if code != 200:
            return _fail(code, body)
        print(json.dumps(body) if args.json else body["value"])
        return 0
    if action == "put":
        value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
        cas = f"?cas={args.cas}" if args.cas is not None else ""
        code, body = _call(args, "PUT", f"/v1/kv/{q(args.key)}{cas}", value)
        if code != 200:
            return _fail(code, body)
        print(f"revision {body['revision']}")
        return 0
    if action == "del":
        code, body = _call(args, "DELETE", f"/v1/kv/{q(args.key)}")
        if code != 200:
            return _fail(code, body)
        print(f"revision {body['revision']}" + ("" if body["changed"] else " (was absent)"))
        return 0
    if action == "ls":
        stale = "&consistency=stale" if args.stale else ""
        code, body = _call(args, "GET", f"/v1/kv?prefix={q(args.prefix)}{stale}")
        if code != 200:
            return _fail(code, body)
        for kv in body["kvs"]:
            print(f"{kv['key']}\t{kv['value']}")
        return 0
    return _watch(args)


def _watch(args: argparse.Namespace) -> int:
    q = urllib.parse.quote
    since = args.since
    if since == 0:
        code, body = _call(args, "GET", "/v1/raft/status")
        if code != 200:
            return _fail(code, body)
        since = int(body.get("kv_revision", body["applied_index"])) + 1  # from now on
    seen = 0
    prefix = "&prefix=1" if args.prefix else ""
    while True:
        code, body = _call(args, "GET", f"/v1/kv/{q(args.key)}?watch=1&since={since}{prefix}")
        if code != 200:
            return _fail(code, body)
        events = body["events"]
        for i, e in enumerate(events):
            print(json.dumps(e), flush=True)
            since = e["revision"] + 1
            seen += 1
            last_of_revision = i + 1 == len(events) or events[i + 1]["revision"] != e["revision"]
            if args.count and seen >= args.count and last_of_revision:
                return 0
