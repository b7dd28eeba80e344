"""``moltmesh kv`` and ``moltmesh raft status`` against an in-process mesh node whose API serves
HTTPS with a private CA's certificate: ``--cacert`` reaches it, refusals name the key, empty keys
are usage errors, and ``watch "" --prefix`` follows the whole KV."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import ipaddress
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from moltmesh.cli import main
from moltmesh.config import NodeConfig
from moltmesh.node import Node
from tests.models import make_repository


def private_ca(root: Path) -> tuple[Path, Path, Path]:
    """(CA cert, server cert, server key) PEM files: a CA of its own signs a certificate for
    127.0.0.1, so only a client given the CA trusts it."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = root / "ca.pem", root / "cert.pem", root / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@contextlib.asynccontextmanager
async def tls_member(tmp_path: Path) -> AsyncIterator[tuple[Node, Path]]:
    """A `mesh init` node (the sole Raft voter) serving ``tiny`` over HTTPS; yields it and the
    CA file that signed its API certificate."""
    data = tmp_path / "n"
    assert main(["mesh", "init", "--data-dir", str(data)]) == 0
    ca, cert, key = private_ca(tmp_path)
    config = NodeConfig(data_dir=data)
    config.api.port = 0
    config.api.tls_cert, config.api.tls_key = cert, key
    config.runtime.bundled_models = False
    config.runtime.model_repository = [make_repository(tmp_path / "repo")]
    config.mesh.host, config.mesh.port, config.mesh.swim = "127.0.0.1", 0, "local"
    config.raft.timing = "local"
    async with Node(config) as node:
        await node.kv.put("seed", b"1")  # the group has a leader
        yield node, ca


async def cli(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in a thread (the node runs on this loop); (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(list(argv))

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


async def test_cacert_reaches_a_node_with_a_private_certificate(tmp_path: Path):
    async with tls_member(tmp_path) as (node, ca):
        assert node.api_url is not None and node.api_url.startswith("https://")
        d = ("--data-dir", str(node.config.data_dir))
        code, _, err = await cli("kv", "get", "seed", *d)
        assert code == 2 and "CERTIFICATE_VERIFY_FAILED" in err and "--cacert FILE" in err
        tls = ("--cacert", str(ca))
        assert (await cli("kv", "put", "k", "v", *d, *tls))[0] == 0
        code, out, _ = await cli("kv", "get", "k", *d, *tls)
        assert code == 0 and out == "v\n"
        code, out, _ = await cli("raft", "status", *d, *tls)
        assert code == 0 and json.loads(out)["voters"] == [node.node_id]
        source = tmp_path / "x.json"
        source.write_text("[1, 2, 3]")
        code, out, err = await cli("infer", "tiny", str(source), *d, *tls)
        assert code == 0 and "probs" in out, err


async def test_kv_refusals_name_the_key_and_whole_kv_watch_works(tmp_path: Path):
    async with tls_member(tmp_path) as (node, ca):
        d = ("--data-dir", str(node.config.data_dir), "--cacert", str(ca))
        code, _, err = await cli("kv", "get", "nope", *d)
        assert (code, err) == (1, "error (404): key 'nope' not found\n")
        code, _, err = await cli("kv", "put", "seed", "x", "--cas", "0", *d)
        assert code == 1 and "key 'seed' has mod revision" in err
        for argv in (["get", ""], ["put", "", "v"], ["del", ""], ["watch", ""]):
            code, _, err = await cli("kv", *argv, *d)
            assert code == 2 and "empty key" in err and err.count("\n") == 1, argv
        since = node.kv.local.revision + 1
        await node.kv.put("a/1", b"x")
        await node.kv.put("zz", b"y")
        code, out, err = await cli("kv", "watch", "", "--prefix", "--since", str(since),
                                   "--count", "2", *d)  # fmt: skip
        assert code == 0, err
        assert [json.loads(line)["key"] for line in out.splitlines()] == ["a/1", "zz"]


def test_kv_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["kv", "--help"])
    out = capsys.readouterr().out
    assert "exit status:" in out and "4  outcome unknown" in out and "3  not applied" in out
    with pytest.raises(SystemExit):
        main(["kv", "ls", "--help"])
    assert "served even without quorum" in capsys.readouterr().out


def test_watch_paths_and_error_pages():
    from moltmesh.cli_kv import _json_body, _watch_path

    assert _watch_path("", True) == "/v1/kv?watch=1"  # the whole KV: no key, no prefix flag
    assert _watch_path("a b/", True) == "/v1/kv/a%20b/?watch=1&prefix=1"
    assert _watch_path("k", False) == "/v1/kv/k?watch=1"
    assert _json_body(b"404: Not Found") == {"error": "404: Not Found"}  # aiohttp's own page
    assert _json_body(b'["x"]') == {"error": '["x"]'}
    assert _json_body(b"") == {}
