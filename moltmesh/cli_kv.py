"""``moltmesh kv get|put|del|ls|watch``: the cluster KV through the node running on this data
directory (its HTTP API; ``--cacert`` when it serves HTTPS with a private CA's certificate).

Exit codes (also in ``moltmesh kv --help``): 0 done; 1 the key is absent (get) or a CAS found
another mod revision (put --cas); 2 a usage error, a node that cannot be reached or a request
it refused (400, 410 compacted, 413 too large); 3 not applied (503: no quorum or no leader;
retrying later is safe); 4 outcome unknown (504: the write left but its outcome was not seen
before the deadline; read the key before retrying).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

EXIT_CODES = """\
exit status:
  0  done
  1  the key is absent (get), or a CAS found another mod revision (put --cas)
  2  usage error, node unreachable, or request refused (400, 410 compacted, 413 too large)
  3  not applied (503: no quorum or no leader); retrying later is safe
  4  outcome unknown (504: the write left, its outcome was not seen); read before retrying
"""


def add_parser(sub: Any) -> None:
    from moltmesh.cli import add_node_config_flags, add_tls_flags

    kv = sub.add_parser(
        "kv", help="read and write the cluster KV (strongly consistent, replicated by Raft)",
        description="Talks to the node running on --data-dir. Reads are linearizable unless "
        "--stale (the local copy, served even without quorum).",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    ksub = kv.add_subparsers(dest="kv_command", metavar="ACTION", required=True)
    get = ksub.add_parser("get", help="print a key's value", epilog=EXIT_CODES)
    get.add_argument("key", help="the key (any non-empty text, e.g. line3/threshold)")
    get.add_argument("--stale", action="store_true", help="read the local copy")
    get.add_argument("--json", action="store_true", help="print the whole record")
    put = ksub.add_parser("put", help="set a key (value from the argument, or - for stdin)")
    put.add_argument("key", help="the key (any non-empty text)")
    put.add_argument("value", help="the value (text), or - to read bytes from stdin")
    put.add_argument("--cas", type=int, help="only if the key's mod revision is this (0: absent)")
    dele = ksub.add_parser("del", help="delete a key")
    dele.add_argument("key", help="the key to delete")
    ls = ksub.add_parser("ls", help="list keys under a prefix")
    ls.add_argument("prefix", nargs="?", default="", help="key prefix (default: every key)")
    ls.add_argument(
        "--stale", action="store_true", help="list the local copy (served even without quorum)"
    )
    watch = ksub.add_parser(
        "watch", help="print changes as they happen (one JSON per line)",
        description='Print changes to KEY, or with --prefix to every key under KEY (--prefix "" '
        "watches the whole KV).",
    )  # fmt: skip
    watch.add_argument("key", help="the key, or the prefix with --prefix")
    watch.add_argument("--prefix", action="store_true", help="every key under KEY")
    watch.add_argument("--since", type=int, default=0, help="from this revision (0: from now)")
    watch.add_argument("--count", type=int, default=0,
                       help="stop after this many events, at the end of a revision (writes "
                       "that reach the leader together share one)")  # fmt: skip
    for p in (get, put, dele, ls, watch):
        add_node_config_flags(p)
        add_tls_flags(p)
        p.set_defaults(func=cmd_kv)


def _call(args: argparse.Namespace, method: str, path: str, body: bytes | None = None,
          timeout: float = 60.0) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """One request to the local node's API: (status, JSON body). A body that is not a JSON
    object (aiohttp's own 404 page) comes back as ``{"error": text}``."""
    import urllib.error
    import urllib.request

    from moltmesh.cli import config_from
    from moltmesh.client import check_url, local_endpoint, tls_context, unreachable

    url, token = local_endpoint(config_from(args).data_dir)
    url = check_url(url)
    context = tls_context(getattr(args, "cacert", None))
    req = urllib.request.Request(url + path, data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, _json_body(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, _json_body(e.read())
    except urllib.error.URLError as e:
        raise unreachable(url, e.reason) from None


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        doc = None
    return doc if isinstance(doc, dict) else {"error": raw.decode("utf-8", "replace").strip()}


def _fail(code: int, body: dict[str, Any], key: str | None = None) -> int:
    """Print the node's refusal as one line on stderr; the exit code (module docstring)."""
    reason = body.get("reason") or body.get("error") or "failed"
    if code == 404 and key is not None:
        reason = f"key {key!r} not found"
    elif code == 409 and key is not None and "current" in body:
        current = body["current"]
        reason = f"key {key!r} " + (f"has mod revision {current}" if current else "is absent")
    print(f"error ({code}): {reason}", file=sys.stderr)
    return {404: 1, 409: 1, 503: 3, 504: 4}.get(code, 2)


def _key(key: str, hint: str) -> str:
    from moltmesh.cli import UsageError

    if not key:
        raise UsageError(f"empty key: {hint}")
    return urllib.parse.quote(key)


def cmd_kv(args: argparse.Namespace) -> int:
    q = urllib.parse.quote
    action = args.kv_command
    if action == "get":
        stale = "?consistency=stale" if args.stale else ""
        path = f"/v1/kv/{_key(args.key, 'give a key (`moltmesh kv ls` lists them)')}{stale}"
        code, body = _call(args, "GET", path)
        if code != 200:
            return _fail(code, body, args.key)
        print(json.dumps(body) if args.json else body["value"])
        return 0
    if action == "put":
        key = _key(args.key, "give a key to set")
        value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
        cas = f"?cas={args.cas}" if args.cas is not None else ""
        code, body = _call(args, "PUT", f"/v1/kv/{key}{cas}", value)
        if code != 200:
            return _fail(code, body, args.key)
        print(f"revision {body['revision']}")
        return 0
    if action == "del":
        code, body = _call(args, "DELETE", f"/v1/kv/{_key(args.key, 'give a key to delete')}")
        if code != 200:
            return _fail(code, body, args.key)
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


def _watch_path(key: str, prefix: bool) -> str:
    """The watch URL without ``since``: ``/v1/kv?watch=1`` (no key, no prefix) is the whole
    KV; a key with ``prefix=1`` is every key under it."""
    if not key:
        if not prefix:
            _key(key, 'give a key, or --prefix "" to watch every key')
        return "/v1/kv?watch=1"
    return f"/v1/kv/{urllib.parse.quote(key)}?watch=1" + ("&prefix=1" if prefix else "")


def _watch(args: argparse.Namespace) -> int:
    path = _watch_path(args.key, args.prefix)
    since = args.since
    if since == 0:
        code, body = _call(args, "GET", "/v1/raft/status")
        if code != 200:
            return _fail(code, body)
        since = int(body.get("kv_revision", body["applied_index"])) + 1  # from now on
    seen = 0
    while True:
        code, body = _call(args, "GET", f"{path}&since={since}")
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
