"""User errors from layers below the CLI (a busy data directory, mDNS that cannot start) are one
line on stderr with exit status 2, never a traceback; every option says what it does."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from moltmesh import cli
from moltmesh.dirlock import DataDirLock


def test_a_node_on_a_held_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with DataDirLock(tmp_path / "d", "moltmesh raft recover"):
        code = cli.main(["node", "--data-dir", str(tmp_path / "d"), "--port", "0"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert (
        err.startswith("moltmesh node: data directory") and "in use by moltmesh raft recover" in err
    )
    assert err.count("\n") == 1


def test_a_discovery_failure_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from moltmesh.discovery.service import DiscoveryError

    def node_fails(args: argparse.Namespace) -> int:
        raise DiscoveryError("another device already announces node id abc on this link")

    monkeypatch.setattr(cli, "cmd_node", node_fails)
    assert cli.main(["node"]) == 2
    assert capsys.readouterr().err == (
        "moltmesh node: another device already announces node id abc on this link\n"
    )


def test_a_bug_still_raises(monkeypatch: pytest.MonkeyPatch):
    """Only user errors are turned into messages: anything else keeps its traceback."""

    def node_fails(args: argparse.Namespace) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_node", node_fails)
    with pytest.raises(KeyError):
        cli.main(["node"])


def test_every_option_has_help():
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif action.help is None:
                missing.append(f"{path} {action.option_strings or action.dest}")

    walk(cli.build_parser(), "moltmesh")
    assert missing == []
