"""``moltmesh mesh ...`` and the mesh flags of ``moltmesh node`` (``--token``, ``--seed``).

    moltmesh mesh init                     create a mesh here (CA, certificate, key ring)
    moltmesh mesh token [--address H:P]    print a one-line, single-use, expiring join token
    moltmesh mesh ca import CERT KEY       make this member a CA holder too
    moltmesh mesh keys list|install|use|remove
    moltmesh mesh revoke NODE              refuse NODE everywhere and rotate the gossip key
    moltmesh status [--json]               members as the running node sees them
    moltmesh node --token TOKEN --seed H:P join a mesh on first start, then meet peers

Key ring changes and revocations are carried out by the running node of this data directory
(reached over mutual TLS with its own certificate), which relays them to every member. When no
node is running, only this device's files change, and the command says so.

Data-directory lock (``<data-dir>/lock``, held by a running node for its whole life): ``init``
and ``ca import`` hold it while they write, so they refuse to run beside a node; ``keys
install|use|remove`` and ``revoke`` hold it when they change the files offline, and go through
the running node when a node holds it; ``token``, ``keys list`` and ``status`` take no lock
(``token`` only adds a record to the CA holder's token file, beside a running node).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from moltmesh.config import NodeConfig

log = logging.getLogger("moltmesh.cli")


def add_node_flags(node: argparse.ArgumentParser) -> None:
    """The mesh flags of ``moltmesh node``."""
    node.add_argument(
        "--token", help="join the mesh of this token (from `moltmesh mesh token`) on first start"
    )
    node.add_argument(
        "--seed", action="append", metavar="HOST:PORT",
        help="address of a mesh peer to meet first (repeatable)",
    )  # fmt: skip
    node.add_argument("--mesh-port", type=int, help="mesh port, TCP and UDP (default 8471)")
    node.add_argument("--mesh-host", help="mesh listen address (default 0.0.0.0)")


def node_overrides(args: argparse.Namespace) -> dict[str, object]:
    seeds = getattr(args, "seed", None)
    return {
        "mesh.seeds": list(seeds) if seeds else None,
        "mesh.port": getattr(args, "mesh_port", None),
        "mesh.host": getattr(args, "mesh_host", None),
    }


def ttl_seconds(text: str) -> float:
    """argparse type of ``--ttl``: seconds, finite, in ``(0, MAX_TTL_S]``."""
    from moltmesh.mesh.tokens import check_ttl

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    try:
        return check_ttl(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


LOCKED = "Holds the data directory's lock: refused while a node runs on it."
RELAYED = (
    "Goes through the node running on this data directory (it holds the directory's lock); "
    "with none, changes this device's files under that lock."
)


def add_parser(sub: Any) -> None:
    from moltmesh.cli import add_node_config_flags, plain_doc
    from moltmesh.mesh.tokens import MAX_TTL_S

    mesh = sub.add_parser(
        "mesh", help="create a mesh, issue join tokens, manage gossip keys and revocations",
        description=plain_doc(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    msub = mesh.add_subparsers(dest="mesh_command", metavar="ACTION", required=True)

    p = msub.add_parser(
        "init", help="create a new mesh with this node as its CA holder", description=LOCKED
    )
    add_node_config_flags(p)
    p.set_defaults(func=cmd_init)

    p = msub.add_parser(
        "token", help="print a join token (CA holders only)",
        description="Print a one-line, single-use, expiring join token. Takes no lock: it runs "
        "beside the node, which admits the device that presents the token.",
    )  # fmt: skip
    add_node_config_flags(p)
    p.add_argument("--address", help="HOST:PORT where new devices reach this node")
    p.add_argument(
        "--ttl", type=ttl_seconds, metavar="SECONDS",
        help=f"seconds the token stays valid: more than 0, at most {MAX_TTL_S:g} (30 days) "
        "(default: mesh.token_ttl_s, 86400)",
    )  # fmt: skip
    p.set_defaults(func=cmd_token)

    ca_p = msub.add_parser("ca", help="CA key management")
    ca_sub = ca_p.add_subparsers(dest="ca_command", metavar="ACTION", required=True)
    p = ca_sub.add_parser(
        "import", help="install the mesh CA certificate and key here", description=LOCKED
    )
    add_node_config_flags(p)
    p.add_argument("cert", type=Path, help="CA certificate (PEM)")
    p.add_argument("key", type=Path, help="CA private key (PEM, Ed25519)")
    p.set_defaults(func=cmd_ca_import)

    keys = msub.add_parser("keys", help="the gossip key ring (install, use, remove: no downtime)")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("list", help="key ids; the primary seals outgoing gossip")
    add_node_config_flags(p)
    p.set_defaults(func=cmd_keys_list)
    p = ksub.add_parser(
        "install", help="add a key everywhere (generated when KEY is omitted)", description=RELAYED
    )
    add_node_config_flags(p)
    p.add_argument("key", nargs="?", help="base64 of 32 bytes")
    p.set_defaults(func=cmd_keys_install)
    for name, helptext in (("use", "seal gossip with this key everywhere"),
                           ("remove", "forget this key everywhere")):  # fmt: skip
        p = ksub.add_parser(name, help=helptext, description=RELAYED)
        add_node_config_flags(p)
        p.add_argument("key_id", help="key id (8 hex digits, from `keys list`)")
        p.set_defaults(func=cmd_keys_use if name == "use" else cmd_keys_remove)

    p = msub.add_parser(
        "revoke", help="refuse a node everywhere and rotate the gossip key", description=RELAYED
    )
    add_node_config_flags(p)
    p.add_argument("node", help="node id to revoke")
    p.set_defaults(func=cmd_revoke)

    add_status_parser(sub)


def _config(args: argparse.Namespace) -> NodeConfig:
    from moltmesh.cli import config_from

    return config_from(args)


def _usage(e: Exception) -> Exception:
    from moltmesh.cli import UsageError

    return UsageError(str(e))


def mesh_errors() -> tuple[type[Exception], ...]:
    from moltmesh.mesh.errors import MeshError
    from moltmesh.mesh.keyring import KeyRingError

    return (MeshError, KeyRingError)


def cmd_init(args: argparse.Namespace) -> int:
    import datetime as dt

    from moltmesh.dirlock import DataDirLock
    from moltmesh.identity import load_or_create_identity
    from moltmesh.mesh import ca, store

    config = _config(args)
    with DataDirLock(config.data_dir, "moltmesh mesh init"):
        identity = load_or_create_identity(config.data_dir)
        try:
            state = store.init_mesh(
                config.data_dir, identity, dt.timedelta(seconds=config.mesh.cert_lifetime_s),
                dt.timedelta(seconds=config.mesh.cert_backdate_s), ca.utcnow(),
            )  # fmt: skip
        except mesh_errors() as e:
            raise _usage(e) from None
    print(f"mesh {state.mesh_id} created; this node {state.node_id} holds its CA")
    print(f"CA fingerprint {state.ca_fingerprint}")
    print(f"CA key in {state.dir / 'ca.key'} (keep it there, or back it up offline)")
    print("next: `moltmesh node`, then `moltmesh mesh token` for each new device")
    return 0


def _load(config: NodeConfig) -> Any:
    from moltmesh.mesh import store

    try:
        return store.load(config.data_dir)
    except mesh_errors() as e:
        raise _usage(e) from None


def _running_address(state: Any) -> str | None:
    from moltmesh.mesh.service import ADDRESS_FILE

    path = state.dir / ADDRESS_FILE
    return path.read_text(encoding="ascii").strip() if path.exists() else None


def cmd_token(args: argparse.Namespace) -> int:
    config = _config(args)
    state = _load(config)
    if state.ca_key is None:
        raise _usage(ValueError("only a CA holder issues tokens (see `moltmesh mesh ca import`)"))
    address = args.address or config.mesh.advertise
    running = _running_address(state)
    if not address and running and not running.startswith(("0.0.0.0:", "[::]:")):
        address = running
    if not address:
        raise _usage(ValueError("give --address HOST:PORT: where new devices reach this node"))
    ttl = args.ttl
    if ttl is None:
        from moltmesh.mesh.tokens import check_ttl

        try:
            ttl = check_ttl(config.mesh.token_ttl_s)
        except ValueError as e:
            raise _usage(ValueError(f"mesh.token_ttl_s: {e}; give --ttl")) from None
    try:
        token = state.tokens().create(state.ca_fingerprint, address, ttl, time.time())
    except (ValueError, *mesh_errors()) as e:
        raise _usage(e) from None
    print(token)
    return 0


def cmd_ca_import(args: argparse.Namespace) -> int:
    from moltmesh.dirlock import DataDirLock
    from moltmesh.mesh import store

    config = _config(args)
    cert, key = args.cert.read_bytes(), args.key.read_bytes()
    _load(config)  # a member's directory, before the lock creates anything
    with DataDirLock(config.data_dir, "moltmesh mesh ca import"):
        try:
            state = store.import_ca(config.data_dir, cert, key)
        except mesh_errors() as e:
            raise _usage(e) from None
    print(f"CA key of mesh {state.mesh_id} installed; this node can now admit and revoke")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from moltmesh.mesh.keyring import format_key_id

    state = _load(_config(args))
    for info in state.keyring.list():
        print(f"{format_key_id(info.key_id)}{'  primary' if info.primary else ''}")
    return 0


async def _ask_running(config: NodeConfig, state: Any, address: str, msg: object) -> Any:
    from moltmesh.mesh.admin import ADMIN_CODEC
    from moltmesh.mesh.drops import DropCounters
    from moltmesh.mesh.streams import MeshStreams
    from moltmesh.mesh.wire import Channel

    streams = MeshStreams(state, config.mesh, DropCounters())
    try:
        _, raw = await streams.request(
            state.node_id, address, Channel.ADMIN, ADMIN_CODEC.encode(msg)
        )
    finally:
        await streams.close()
    return ADMIN_CODEC.decode(raw)


def _no_answer(address: str, e: Exception) -> Exception:
    return _usage(ValueError(f"no node answers at {address} (is it running?): {e}"))


def _mesh_wide(config: NodeConfig, state: Any, msg: object) -> None:
    """Have the running node carry out ``msg`` (it relays it to every member)."""
    from moltmesh.mesh.streams import StreamError

    address = _running_address(state)
    if address is None:
        raise _usage(
            ValueError(
                f"{config.data_dir} is in use, but no node serves on it yet (starting, or "
                "another command): try again in a moment"
            )
        )
    try:
        reply = asyncio.run(_ask_running(config, state, address, msg))
    except StreamError as e:
        raise _no_answer(address, e) from None
    if not reply.ok:
        raise _usage(ValueError(f"not applied everywhere: {reply.error}"))


def _offline_lock(config: NodeConfig, purpose: str) -> Any:
    """The data directory's lock, held, when no node runs on it; None when a node (or another
    command) holds it: then the change goes through the running node."""
    from moltmesh.dirlock import DataDirBusy, DataDirLock

    lock = DataDirLock(config.data_dir, purpose)
    try:
        lock.acquire()
    except DataDirBusy:
        return None
    return lock


def _key_op(args: argparse.Namespace, op: Any) -> None:
    from moltmesh.mesh.admin import RelayKeyOp
    from moltmesh.mesh.service import MeshService

    config = _config(args)
    state = _load(config)
    lock = _offline_lock(config, "moltmesh mesh keys")
    if lock is None:
        _mesh_wide(config, state, RelayKeyOp(op))
        print("applied on every member")
        return
    with lock:
        try:
            MeshService(config.data_dir, config.mesh, state=_load(config)).apply_key_op(op)
        except mesh_errors() as e:
            raise _usage(e) from None
    print("no node is running here: changed this device's key ring only")


def cmd_keys_install(args: argparse.Namespace) -> int:
    from moltmesh.mesh.admin import KeyOp, KeyOpKind
    from moltmesh.mesh.keyring import decode_key, encode_key, format_key_id, generate_key, key_id

    try:
        key = decode_key(args.key) if args.key else generate_key()
    except mesh_errors() as e:
        raise _usage(e) from None
    _key_op(args, KeyOp(KeyOpKind.INSTALL, key, key_id(key)))
    print(
        f"installed key {format_key_id(key_id(key))}" + ("" if args.key else f": {encode_key(key)}")
    )
    return 0


def _key_id_op(args: argparse.Namespace, kind_name: str) -> int:
    from moltmesh.mesh.admin import KeyOp, KeyOpKind
    from moltmesh.mesh.keyring import parse_key_id

    try:
        kid = parse_key_id(args.key_id)
    except mesh_errors() as e:
        raise _usage(e) from None
    _key_op(args, KeyOp(KeyOpKind[kind_name], b"", kid))
    return 0


def cmd_keys_use(args: argparse.Namespace) -> int:
    return _key_id_op(args, "USE")


def cmd_keys_remove(args: argparse.Namespace) -> int:
    return _key_id_op(args, "REMOVE")


def cmd_revoke(args: argparse.Namespace) -> int:
    from moltmesh.mesh.admin import Revoke
    from moltmesh.mesh.service import MeshService

    config = _config(args)
    state = _load(config)
    if state.ca_key is None:
        raise _usage(ValueError("only a CA holder can revoke (see `moltmesh mesh ca import`)"))
    lock = _offline_lock(config, "moltmesh mesh revoke")
    if lock is None:
        _mesh_wide(config, state, Revoke(args.node))
        print(f"revoked {args.node}; the gossip key was rotated on every other member")
        return 0
    with lock:
        service = MeshService(config.data_dir, config.mesh, state=_load(config))
        try:
            asyncio.run(service.revoke(args.node))  # no peers known offline: local files only
        except mesh_errors() as e:
            raise _usage(e) from None
    print(f"revoked {args.node} on this device only (no node running here); start the node "
          "and revoke again to reach the others")  # fmt: skip
    return 0


def members_table(doc: dict[str, Any]) -> Any:
    """The ``status`` table (a rich ``Table``). Node ids are never cut, however narrow the
    terminal: ``revoke`` and ``raft recover --voters`` need them whole."""
    from rich.table import Table

    from moltmesh.identity import NODE_ID_CHARS

    table = Table(title=f"mesh {doc['mesh']} seen from {doc['node']}")
    table.add_column("node", overflow="fold", min_width=NODE_ID_CHARS)
    for col in ("state", "address", "tier", "cpu %", "mem %", "models", "age s"):
        table.add_column(col, overflow="fold")
    for m in doc["members"]:
        models = ", ".join(f"{k} ({'+'.join(v)})" if v else k for k, v in m["models"].items())
        name = m["node"] + (" (this node)" if m["self"] else "")
        table.add_row(name, m["status"], m["address"], m["tier"], str(m["cpu_load"]),
                      str(m["mem_load"]), models, f"{m['age_s']:.0f}")  # fmt: skip
    return table


def join_if_token(args: argparse.Namespace, config: NodeConfig) -> None:
    """``moltmesh node --token``: join before the node starts, holding the data directory's
    lock while it writes the credentials (released before the node takes it for its life).

    A member of the token's mesh ignores the token, unless its certificate has expired (it was
    away longer than the certificate lifetime): then it joins again with it.
    """
    token_text = getattr(args, "token", None)
    if not token_text:
        return
    from moltmesh.dirlock import DataDirLock
    from moltmesh.identity import load_or_create_identity
    from moltmesh.mesh import ca, store
    from moltmesh.mesh.join import join
    from moltmesh.mesh.tokens import parse_token

    try:
        token = parse_token(token_text)
        with DataDirLock(config.data_dir, "moltmesh node --token (joining)"):
            rejoin = False
            if store.has_mesh(config.data_dir):
                state = store.load(config.data_dir)
                if state.ca_fingerprint != token.ca_fingerprint:
                    raise _usage(ValueError(f"{config.data_dir} already belongs to another mesh"))
                if ca.utcnow() < state.node_cert.not_valid_after_utc:
                    print(f"already a member of mesh {state.mesh_id}; ignoring --token", flush=True)
                    return
                rejoin = True
            identity = load_or_create_identity(config.data_dir)
            state = asyncio.run(join(token, identity, config.data_dir, config.mesh, rejoin))
    except (*mesh_errors(), OSError, TimeoutError) as e:
        raise _usage(ValueError(f"cannot join with this token: {e}")) from None
    again = "again (its certificate had expired) " if rejoin else ""
    print(f"joined mesh {state.mesh_id} {again}as node {state.node_id}", flush=True)


def add_status_parser(sub: Any) -> None:
    from moltmesh.cli import add_node_config_flags

    p = sub.add_parser(
        "status", help="members of the mesh as the running node sees them",
        description="A table of members: state, address, tier, load, models, age (seconds since "
        "the state last changed). Asks the node running on this data directory, over mutual TLS.",
    )  # fmt: skip
    add_node_config_flags(p)
    p.add_argument("--json", action="store_true", help="print the JSON document instead")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from moltmesh.mesh.admin import AdminReply, MemberList, MembersRequest
    from moltmesh.mesh.streams import StreamError

    config = _config(args)
    state = _load(config)
    address = _running_address(state)
    if address is None:
        raise _usage(ValueError(f"no node is running on {config.data_dir}"))
    try:
        reply = asyncio.run(_ask_running(config, state, address, MembersRequest()))
    except StreamError as e:
        raise _no_answer(address, e) from None
    if isinstance(reply, AdminReply) or not isinstance(reply, MemberList):
        raise _usage(ValueError(getattr(reply, "error", "unexpected answer")))
    doc = json.loads(reply.document)
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    from rich.console import Console

    console = Console()
    console.print(members_table(doc))
    raft = doc.get("raft")
    if raft:
        voters = ", ".join(str(v) for v in raft["voters"])
        console.print(
            f"raft: {raft['role']} · term {raft['term']} · leader {raft['leader'] or 'none'} · "
            f"commit {raft['commit_index']} · applied {raft['applied_index']} · voters {voters}"
        )
    return 0
