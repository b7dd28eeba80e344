"""``moltmesh mesh ...`` commands and ``moltmesh node --token``: offline, and with real nodes."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from moltmesh.cli import main
from moltmesh.config import load_config
from moltmesh.mesh import store
from moltmesh.mesh.tokens import parse_token

LOCAL = {"MOLTMESH_MESH_SWIM": "local"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_mesh_commands_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    d = str(tmp_path / "a")
    code, out, _ = run(capsys, "mesh", "init", "--data-dir", d)
    assert code == 0 and "holds its CA" in out
    code, _, err = run(capsys, "mesh", "init", "--data-dir", d)
    assert code == 2 and "refusing to replace" in err
    code, _, err = run(capsys, "mesh", "token", "--data-dir", d)
    assert code == 2 and "--address" in err
    code, out, _ = run(capsys, "mesh", "token", "--data-dir", d, "--address", "10.0.0.5:8471")
    token = parse_token(out.strip())
    assert token.address == "10.0.0.5:8471"
    assert token.ca_fingerprint == store.load(Path(d)).ca_fingerprint

    code, out, _ = run(capsys, "mesh", "keys", "list", "--data-dir", d)
    (first,) = out.split()[:1]
    code, out, _ = run(capsys, "mesh", "keys", "install", "--data-dir", d)
    assert code == 0 and "changed this device's key ring only" in out
    second = out.split("installed key ")[1].split(":")[0]
    assert run(capsys, "mesh", "keys", "use", "--data-dir", d, second)[0] == 0
    code, _, err = run(capsys, "mesh", "keys", "remove", "--data-dir", d, second)
    assert code == 2 and "primary" in err
    assert run(capsys, "mesh", "keys", "remove", "--data-dir", d, first)[0] == 0
    code, out, _ = run(capsys, "mesh", "keys", "list", "--data-dir", d)
    assert out.split() == [second, "primary"]
    code, _, err = run(capsys, "mesh", "keys", "use", "--data-dir", d, "zz")
    assert code == 2 and "key id" in err

    code, _, err = run(capsys, "mesh", "revoke", "--data-dir", d, "not-a-node")
    assert code == 2
    code, out, _ = run(capsys, "mesh", "revoke", "--data-dir", d, "b" * 16)
    assert code == 0 and "this device only" in out
    state = store.load(Path(d))
    assert "b" * 16 in state.revocations and state.keyring.primary_id != int(second, 16)

    code, _, err = run(capsys, "mesh", "keys", "list", "--data-dir", str(tmp_path / "none"))
    assert code == 2 and "mesh init" in err
    code, _, err = run(capsys, "node", "--data-dir", str(tmp_path / "x"), "--token", "nonsense")
    assert code == 2 and "not a moltmesh join token" in err


def test_node_flags_reach_the_config():
    from moltmesh.cli import build_parser, node_overrides

    args = build_parser().parse_args(
        ["node", "--seed", "10.0.0.1:8471", "--seed", "h:1", "--mesh-port", "0"]
    )
    config = load_config(overrides=node_overrides(args))
    assert config.mesh.seeds == ["10.0.0.1:8471", "h:1"] and config.mesh.port == 0


@pytest.mark.integration
def test_node_joins_with_a_token_and_cli_reaches_the_running_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from tests.integration.nodeproc import running_node

    a, b = tmp_path / "a", tmp_path / "b"
    mesh_flags = ("--no-bundled-models", "--mesh-host", "127.0.0.1", "--mesh-port", "0")
    assert run(capsys, "mesh", "init", "--data-dir", str(a))[0] == 0
    with running_node(a, *mesh_flags, env=LOCAL) as node_a:
        code, out, _ = run(capsys, "mesh", "token", "--data-dir", str(a))
        assert code == 0
        token = out.strip()
        seed = store.load(a).dir.joinpath("stream-address").read_text().strip()
        with running_node(b, *mesh_flags, "--token", token, "--seed", seed, env=LOCAL) as node_b:
            assert any(line.startswith("joined mesh") for line in node_b.stdout)
            # Both see each other alive (each status call is one observation of the view).
            for _ in range(200):
                code, out, _ = run(capsys, "status", "--data-dir", str(b), "--json")
                doc = json.loads(out)
                if sum(m["status"] == "alive" for m in doc["members"]) == 2:
                    break
            else:
                raise AssertionError(f"b never saw a alive: {doc}")
            assert {m["node"] for m in doc["members"]} == {doc["node"], store.load(a).node_id}
            sb = store.load(b)
            assert sb.mesh_id == store.load(a).mesh_id and sb.ca_key is None
            # The same token cannot admit anyone else.
            code, _, err = run(capsys, "node", "--data-dir", str(tmp_path / "c"), "--token", token)
            assert code == 2 and "already used" in err
            # Key commands go through the running node (over mutual TLS with its own cert).
            code, out, _ = run(capsys, "mesh", "keys", "install", "--data-dir", str(a))
            assert code == 0 and "applied on every member" in out
            assert len(store.load(a).keyring.keys()) == 2
            req = urllib.request.Request(
                f"{node_a.url}/metrics", headers={"Authorization": f"Bearer {node_a.token}"}
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                metrics = resp.read().decode()
            assert 'moltmesh_mesh_dropped_frames_total{reason="garbage",transport="tcp"}' in metrics
            assert 'moltmesh_mesh_members{state="alive"} 2.0' in metrics
