"""``python -m sim``: run simulations from the command line.

Subcommands come from modules listed in ``COMMAND_MODULES``; each exposes
``add_parser(subparsers)`` that registers its subcommand with ``set_defaults(func=...)``, where
``func(args) -> int`` is the exit status. Modules that are not present (a core not built yet)
are skipped, so each core kind can add its own command without touching this file's logic.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = ("sim.raft_cli", "sim.swim_cli", "sim.kv_cli")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m sim",
        description="Deterministic simulation of moltmesh's consensus cores.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
