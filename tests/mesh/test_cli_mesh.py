"""``moltmesh mesh`` and ``status`` defects a README walkthrough found: token lifetimes must be
finite and bounded (CLI and library), commands that rewrite a data directory refuse while its
lock is held, a dead node's leftover address is worded as such, and node ids are never cut."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from moltmesh.cli import main
from moltmesh.cli_mesh import members_table
from moltmesh.dirlock import DataDirLock
from moltmesh.mesh import store
from moltmesh.mesh.errors import TokenError
from moltmesh.mesh.tokens import MAX_TTL_S, TokenStore, check_ttl, parse_token


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse refusing a flag's value
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def member(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    d = tmp_path / "a"
    assert run(capsys, "mesh", "init", "--data-dir", str(d))[0] == 0
    return d


@pytest.mark.parametrize("ttl", ["-5", "0", "nan", "inf", "-inf", str(MAX_TTL_S * 2), "soon"])
def test_token_ttl_out_of_range_is_refused_by_the_cli(
    member: Path, capsys: pytest.CaptureFixture[str], ttl: str
):
    argv = ["mesh", "token", "--data-dir", str(member), "--address", "10.0.0.5:8471"]
    code, out, err = run(capsys, *argv, "--ttl", ttl)
    assert code == 2 and out == "" and "argument --ttl" in err and "Traceback" not in err
    assert not (store.mesh_dir(member) / "tokens.json").exists()
    code, out, _ = run(capsys, *argv, "--ttl", "60")
    assert code == 0 and parse_token(out.strip()).address == "10.0.0.5:8471"


@pytest.mark.parametrize("ttl", [-5.0, 0.0, math.nan, math.inf, MAX_TTL_S + 1])
def test_token_ttl_out_of_range_is_refused_by_the_library(tmp_path: Path, ttl: float):
    with pytest.raises(ValueError, match="token lifetime"):
        check_ttl(ttl)
    tokens = TokenStore(tmp_path / "tokens.json")
    with pytest.raises(ValueError, match="token lifetime"):
        tokens.create("f" * 52, "h:1", ttl, 1000.0)
    assert not tokens.path.exists()


@pytest.mark.parametrize("expires", ["NaN", "Infinity", '"2e9"', "null", "1e300"])
def test_a_stored_expiry_that_is_not_a_finite_time_is_refused(tmp_path: Path, expires: str):
    """A NaN expiry compares false with every clock: it must not make a token immortal."""
    tokens = TokenStore(tmp_path / "tokens.json")
    tokens.path.write_text(f'{{"t1": {{"sha256": "x", "expires": {expires}, "used": null}}}}')
    with pytest.raises(TokenError, match="no valid expiry"):
        tokens.check("t1", 1000.0)
    tokens.create("f" * 52, "h:1", 60.0, 1000.0)  # and pruning drops such a record
    assert "t1" not in json.loads(tokens.path.read_text())


def test_tokens_expire_at_their_ttl(tmp_path: Path):
    tokens = TokenStore(tmp_path / "tokens.json")
    token = tokens.create("f" * 52, "h:1", 60.0, 1000.0)
    tokens.check(token.token_id, 1059.0)
    with pytest.raises(TokenError, match="expired"):
        tokens.check(token.token_id, 1060.0)


def test_commands_that_rewrite_the_directory_refuse_while_it_is_held(
    member: Path, capsys: pytest.CaptureFixture[str]
):
    d = str(member)
    mesh = store.mesh_dir(member)
    before = {p.name: p.read_bytes() for p in mesh.iterdir()}
    with DataDirLock(member, "moltmesh node"):
        code, _, err = run(capsys, "mesh", "init", "--data-dir", d)
        assert code == 2 and "in use by moltmesh node" in err and err.count("\n") == 1
        code, _, err = run(capsys, "mesh", "ca", "import", str(mesh / "ca.crt"),
                           str(mesh / "ca.key"), "--data-dir", d)  # fmt: skip
        assert code == 2 and "in use by moltmesh node" in err
        for argv in (["keys", "install"], ["revoke", "b" * 16]):
            code, _, err = run(capsys, "mesh", *argv, "--data-dir", d)
            assert code == 2 and "no node serves on it yet" in err, argv  # no address written
        code, _, err = run(capsys, "mesh", "init", "--data-dir", str(member.parent / "fresh"))
        assert code == 0  # another directory is not held
    assert {p.name: p.read_bytes() for p in mesh.iterdir()} == before
    code, out, _ = run(capsys, "mesh", "keys", "install", "--data-dir", d)
    assert code == 0 and "changed this device's key ring only" in out  # free again: offline


def test_a_dead_nodes_leftover_address_reads_as_no_node(
    member: Path, capsys: pytest.CaptureFixture[str]
):
    (store.mesh_dir(member) / "stream-address").write_text("127.0.0.1:9\n")  # as kill -9 leaves
    for argv in (["status"], ["mesh", "revoke", "b" * 16]):
        with DataDirLock(member, "moltmesh node") if argv != ["status"] else _nothing():
            code, _, err = run(capsys, *argv, "--data-dir", str(member))
        assert code == 2 and "no node answers at 127.0.0.1:9 (is it running?)" in err, argv


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_status_table_never_cuts_node_ids():
    ids = ["qn7pc75dlzxw2abc", "b" * 16, "c" * 16]
    doc = {
        "mesh": "m" * 26,
        "node": ids[0],
        "members": [
            {"node": n, "self": i == 0, "status": "alive", "address": f"192.168.100.{i}:8471",
             "tier": "standard", "cpu_load": 12.5, "mem_load": 40.25, "age_s": 3.0,
             "models": {"defects": ["full", "int8"], "a-long-model-name": ["fp16"]}}
            for i, n in enumerate(ids)
        ],
    }  # fmt: skip
    for width in (80, 60):
        out = io.StringIO()
        Console(file=out, width=width).print(members_table(doc))
        text = out.getvalue()
        assert all(n in text for n in ids), text


def test_mesh_help_is_plain_text(capsys: pytest.CaptureFixture[str]):
    code, out, _ = run(capsys, "mesh", "--help")
    assert code == 0 and "``" not in out and "Data-directory lock" in out
    code, out, _ = run(capsys, "mesh", "init", "--help")
    assert "lock" in out


def test_a_configured_token_ttl_out_of_range_names_the_setting(
    member: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MOLTMESH_MESH_TOKEN_TTL_S", str(MAX_TTL_S * 2))
    argv = ["mesh", "token", "--data-dir", str(member), "--address", "10.0.0.5:8471"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "mesh.token_ttl_s" in err and err.count("\n") == 1
    # (refused here, or by config validation should it cap the setting too)
