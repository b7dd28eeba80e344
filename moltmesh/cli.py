"""The ``moltmesh`` command: a thin layer over ``moltmesh.Node`` and the v2 client.

Each subcommand's ``--help`` explains it. Errors a user can fix are printed as one line naming the
problem, with exit status 2 (``moltmesh kv`` has more codes: see its ``--help``); nothing prints
a traceback for bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from moltmesh import __version__, cli_mesh
from moltmesh.config import ConfigError, NodeConfig, load_config

DESCRIPTION = """\
moltmesh: a peer-to-peer mesh for AI inference on edge devices.

Run `moltmesh node` on each device; it serves the KServe/Triton v2 inference API on
127.0.0.1:8470 with the bundled defect classifier unless told otherwise.
"""


EXIT_FAILED = 3
"""``moltmesh node``'s exit status when a part it cannot run without failed while it ran (the
Raft driver: ``moltmesh.node.NodeFailed``): it stopped cleanly and should be restarted (a
supervisor such as systemd with ``Restart=on-failure`` does)."""


class UsageError(Exception):
    """A problem the user can fix; printed as one line."""


def add_node_config_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by commands that build a NodeConfig (they override file and environment)."""
    p.add_argument("--config", type=Path, help="TOML config file (see README: Configuration)")
    p.add_argument("--data-dir", type=Path, help="data directory (default: XDG data dir)")


def add_tls_flags(p: argparse.ArgumentParser) -> None:
    """``--cacert``, for commands that talk to a node's HTTP API (which may serve TLS with a
    certificate of its own CA)."""
    p.add_argument(
        "--cacert", type=Path, metavar="FILE",
        help="trust the node's HTTPS certificate if this CA (PEM) signed it (default: the "
        "system's CAs)",
    )  # fmt: skip


def plain_doc(doc: str | None) -> str:
    """A module docstring as ``--help`` text: reST ````literal```` marks become `literal`."""
    return (doc or "").replace("``", "`")


def node_overrides(args: argparse.Namespace) -> dict[str, object]:
    repos = getattr(args, "model_repository", None)
    return {
        "data_dir": args.data_dir,
        "api.host": getattr(args, "host", None),
        "api.port": getattr(args, "port", None),
        "api.tls_cert": getattr(args, "tls_cert", None),
        "api.tls_key": getattr(args, "tls_key", None),
        "runtime.model_repository": list(repos) if repos else None,
        "runtime.bundled_models": False if getattr(args, "no_bundled_models", False) else None,
        "runtime.variant": getattr(args, "variant", None),
        "log.level": getattr(args, "log_level", None),
        "log.format": getattr(args, "log_format", None),
        **cli_mesh.node_overrides(args),
    }


def config_from(args: argparse.Namespace) -> NodeConfig:
    return load_config(args.config, overrides=node_overrides(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moltmesh", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    node = sub.add_parser(
        "node", help="run a node (HTTP API, models)",
        description="Run a node. On first start it creates its data directory, its Ed25519 "
        "identity and an API token (printed once). Stops cleanly on Ctrl-C or SIGTERM, "
        f"finishing requests in flight. Exit status {EXIT_FAILED}: a part the node cannot run "
        "without (Raft) failed while it ran; it stopped cleanly and should be restarted.",
    )  # fmt: skip
    add_node_config_flags(node)
    node.add_argument("--host", help="API listen address (default 127.0.0.1)")
    node.add_argument("--port", type=int, help="API port (default 8470; 0 picks a free one)")
    node.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    node.add_argument("--tls-key", type=Path, help="private key for --tls-cert (PEM)")
    node.add_argument(
        "--model-repository", type=Path, action="append",
        help="Triton-layout model directory <dir>/<model>/<version>/model.onnx (repeatable)",
    )  # fmt: skip
    node.add_argument("--no-bundled-models", action="store_true", help="serve only your models")
    node.add_argument("--variant", choices=["auto", "full", "int8", "fp16"], help="model variant")
    node.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"],
        help="least severe log events shown (default info)",
    )  # fmt: skip
    node.add_argument(
        "--log-format", choices=["json", "text"],
        help="json: one JSON object per line (default); text: for reading in a terminal",
    )  # fmt: skip
    node.set_defaults(func=cmd_node)
    cli_mesh.add_node_flags(node)

    from moltmesh import cli_infer, cli_kv, cli_models, cli_raft

    cli_infer.add_parser(sub)
    cli_models.add_parser(sub)
    cli_mesh.add_parser(sub)
    cli_kv.add_parser(sub)
    cli_raft.add_parser(sub)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=lambda args: print(f"moltmesh {__version__}") or 0)
    return parser


def cmd_node(args: argparse.Namespace) -> int:
    config = config_from(args)
    from moltmesh.logs import setup_logging

    setup_logging(config.log.level, config.log.format)
    cli_mesh.join_if_token(args, config)
    return run_loop(serve(config))


def run_loop(coro: object) -> int:
    """Run ``coro`` on uvloop when installed, else on the stock asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


async def serve(config: NodeConfig) -> int:
    from moltmesh.identity import TOKEN_FILE
    from moltmesh.node import Node

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    node = Node(config)
    async with node:
        token_path = config.data_dir / TOKEN_FILE
        if node.api_url is None:
            print(f"moltmesh node {node.node_id} running without an HTTP API (api.enabled = false)",
                  flush=True)  # fmt: skip
        else:
            print(f"moltmesh node {node.node_id} serving {node.api_url}", flush=True)
        if node.mesh is not None:
            mesh = node.mesh.service
            print(f"mesh {mesh.state.mesh_id}: node {node.node_id} on {mesh.address}", flush=True)
        if node.token_created:
            print(
                f"API token (saved in {token_path}; shown only now): {node.api_token}", flush=True
            )
        else:
            print(f"API token in {token_path}", flush=True)
        failed = asyncio.ensure_future(node.wait_failed())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait((failed, stopped), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()
        if node.failure is not None:
            print(f"moltmesh node: {node.failure}; stopping, exit status {EXIT_FAILED} "
                  "(restart the node)", file=sys.stderr, flush=True)  # fmt: skip
        print("stopping: finishing requests in flight", flush=True)
    return 0 if node.failure is None else EXIT_FAILED


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that are the user's to fix (a busy data directory, an unreachable node, a
    bad file...): ``main`` prints them as one line, exit status 2."""
    from moltmesh.client import ClientError
    from moltmesh.dirlock import DataDirBusy
    from moltmesh.identity import IdentityError
    from runtimes.errors import RuntimeErrorBase

    errors: tuple[type[Exception], ...] = (
        ClientError,
        DataDirBusy,
        IdentityError,
        RuntimeErrorBase,
        OSError,
        *cli_mesh.mesh_errors(),
    )
    discovery = sys.modules.get("moltmesh.discovery.service")  # loaded if it could have raised
    if discovery is not None:
        errors += (discovery.DiscoveryError,)
    interfaces = sys.modules.get("moltmesh.discovery.interfaces")
    if interfaces is not None:
        errors += (interfaces.InterfaceError,)
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UsageError) as e:
        print(f"moltmesh {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if isinstance(e, user_errors()):
            print(f"moltmesh {args.command}: {e}", file=sys.stderr)
            return 2
        raise
