"""A real ``moltmesh node`` process on loopback, spoken to over HTTP as a client would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from moltmesh import v2
from moltmesh.client import Client, ClientError
from tests.integration.nodeproc import NodeProcess, running_node
from tests.models import tiny_reference

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, model_repo: Path) -> Iterator[NodeProcess]:
    data_dir = tmp_path_factory.mktemp("node")
    with running_node(data_dir, "--model-repository", str(model_repo)) as proc:
        yield proc


def raw(
    node: NodeProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = None,
) -> tuple[int, dict, bytes]:
    """One HTTP request; returns (status, headers, body) for errors too."""
    req = urllib.request.Request(node.url + path, data=body, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def json_infer(x: list, shape: list[int], datatype: str = "FP32", **extra) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": x}], **extra}
    ).encode()


def test_health_needs_no_token(node: NodeProcess):
    assert raw(node, "GET", "/v2/health/live")[0] == 200
    assert raw(node, "GET", "/v2/health/ready")[0] == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2"),
        ("GET", "/v2/models/tiny"),
        ("GET", "/metrics"),
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/models/tiny/infer"),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong-token-of-some-length"])
def test_everything_else_needs_the_token(node: NodeProcess, method, path, token):
    status, _, body = raw(node, method, path, b"{}" if method == "POST" else None, token=token)
    assert status == 401
    assert "token" in json.loads(body)["error"]


def test_server_model_and_repository_metadata(node: NodeProcess):
    c = node.client()
    assert "binary_tensor_data" in c.get_json("/v2")["extensions"]
    meta = c.model_metadata("tiny")
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert {o["name"] for o in meta["outputs"]} == {"probs", "logits"}
    assert meta["parameters"]["labels"] == ["a", "b", "c", "d"]
    assert c.get_json("/v2/models/tiny/versions/1")["name"] == "tiny"
    assert c.request("GET", "/v2/models/tiny/ready")[0] == 200
    index = json.loads(c.request("POST", "/v2/repository/index", b"{}")[2])
    listed = {(m["name"], m["version"]) for m in index}
    assert {("tiny", "1"), ("tiny", "2"), ("slow", "1"), ("defects", "1")} <= listed


def test_json_infer_honours_the_batch(node: NodeProcess):
    x = np.array([[1, 2, 3], [3, 2, 1], [0, 0, 0]], dtype=np.float32)
    status, _, body = raw(
        node,
        "POST",
        "/v2/models/tiny/infer",
        json_infer(x.ravel().tolist(), [3, 3], id="req-7"),
        token=node.token,
    )
    assert status == 200
    response = json.loads(body)
    assert response["id"] == "req-7" and response["model_version"] == "2"
    assert response["parameters"]["route"] == "local"
    assert response["parameters"]["variant"] == "full"
    probs = next(o for o in response["outputs"] if o["name"] == "probs")
    assert probs["shape"] == [3, 4]
    np.testing.assert_allclose(
        np.array(probs["data"]).reshape(3, 4), tiny_reference(x)["probs"], rtol=1e-5
    )


def test_binary_infer_with_requested_outputs(node: NodeProcess):
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    blob = x.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [5, 3],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, headers, body = raw(
        node,
        "POST",
        "/v2/models/tiny/versions/1/infer",
        header + blob,
        {v2.HEADER_LENGTH: str(len(header))},
        token=node.token,
    )
    assert status == 200
    n = int(headers[v2.HEADER_LENGTH])
    response = json.loads(body[:n])
    assert [o["name"] for o in response["outputs"]] == ["logits"]
    logits = np.frombuffer(body[n:], dtype=np.float32).reshape(5, 4)
    np.testing.assert_allclose(logits, tiny_reference(x)["logits"], rtol=1e-5)


def test_concurrent_clients_each_get_their_own_answer(node: NodeProcess):
    """Requests that arrive together may run as one batch: each answer must still be its own."""
    import asyncio

    import aiohttp

    seed = 5
    rng = np.random.default_rng(seed)
    inputs = [
        rng.standard_normal((int(rng.integers(1, 4)), 3)).astype(np.float32) for _ in range(48)
    ]

    async def one(session: aiohttp.ClientSession, x: np.ndarray) -> np.ndarray:
        header = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                         "parameters": {"binary_data_size": x.nbytes}}],
             "parameters": {"binary_data_output": True}}
        ).encode()  # fmt: skip
        headers = {"Authorization": f"Bearer {node.token}", v2.HEADER_LENGTH: str(len(header))}
        url = node.url + "/v2/models/tiny/infer"
        async with session.post(url, data=header + x.tobytes(), headers=headers) as r:
            assert r.status == 200, await r.text()
            body = await r.read()
            n = int(r.headers[v2.HEADER_LENGTH])
        outputs = {o["name"]: o for o in json.loads(body[:n])["outputs"]}
        sizes = [o["parameters"]["binary_data_size"] for o in json.loads(body[:n])["outputs"]]
        offset = n + sum(sizes[: list(outputs).index("probs")])
        return np.frombuffer(body[offset : offset + x.shape[0] * 16], np.float32).reshape(-1, 4)

    async def all_at_once() -> list[np.ndarray]:
        connector = aiohttp.TCPConnector(limit=len(inputs))
        async with aiohttp.ClientSession(connector=connector) as session:
            return await asyncio.gather(*(one(session, x) for x in inputs))

    for x, probs in zip(inputs, asyncio.run(all_at_once()), strict=True):
        np.testing.assert_allclose(
            probs, tiny_reference(x)["probs"], rtol=1e-5, err_msg=f"seed {seed}"
        )


def test_tritonclient_works_unchanged(node: NodeProcess):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(node.url.removeprefix("http://"))
    auth = {"Authorization": f"Bearer {node.token}"}
    assert client.is_server_live()
    assert client.is_model_ready("tiny", headers=auth)
    assert client.get_model_metadata("tiny", headers=auth)["name"] == "tiny"
    x = np.array([[1, 2, 3]], dtype=np.float32)
    for binary in (True, False):
        inp = httpclient.InferInput("x", [1, 3], "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("probs", binary_data=binary)
        result = client.infer("tiny", [inp], outputs=[out], headers=dict(auth))  # it mutates them
        np.testing.assert_allclose(result.as_numpy("probs"), tiny_reference(x)["probs"], rtol=1e-5)
    client.close()


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/tiny/infer", b"{oops", 400, "not valid JSON"),
        ("/v2/models/tiny/infer", json_infer([1, 2], [1, 2]), 400, "x"),
        ("/v2/models/tiny/infer", json_infer([1, 2, 3], [1, 3], "INT64"), 400, "x"),
        (
            "/v2/models/tiny/infer",
            json_infer([1, 2, 3], [1, 3], parameters={"urgency": 3}),
            400,
            "urgency",
        ),
        (
            "/v2/models/tiny/infer",
            json_infer([1, 2, 3], [1, 3], parameters={"deadline_ms": -1}),
            400,
            "deadline_ms",
        ),
        ("/v2/models/nope/infer", json_infer([1, 2, 3], [1, 3]), 404, "nope"),
        ("/v2/models/tiny/versions/9/infer", json_infer([1, 2, 3], [1, 3]), 404, "9"),
    ],
)
def test_bad_requests_get_clear_json_errors(node: NodeProcess, path, body, status, message):
    got, _, reply = raw(node, "POST", path, body, token=node.token)
    assert got == status
    assert message in json.loads(reply)["error"]
    assert raw(node, "GET", "/v2/health/live")[0] == 200  # and the node is fine


def test_metrics_count_requests_and_errors(node: NodeProcess):
    c = node.client()
    c.infer("tiny", {"x": np.zeros((1, 3), np.float32)})
    raw(node, "POST", "/v2/models/tiny/infer", b"{oops", token=node.token)
    text = c.request("GET", "/metrics")[2].decode()
    assert 'moltmesh_requests_total{model="tiny",route="local",status="200"}' in text
    assert 'moltmesh_requests_total{model="tiny",route="local",status="400"}' in text
    assert 'moltmesh_bad_requests_total{status="400"}' in text
    assert "moltmesh_request_seconds_bucket" in text
    assert "moltmesh_inference_seconds_bucket" in text
    assert "moltmesh_queue_depth" in text and "moltmesh_inflight" in text
    assert "process_resident_memory_bytes" in text


def test_bundled_default_model_answers(node: NodeProcess):
    from moltmesh.bundled import defects

    data = defects.generate(defects.TEST_SEED, 16)
    answer = node.client().infer("defects", {"image": data.images})
    probs = answer.outputs["probabilities"]
    assert probs.shape == (16, 4)
    assert (probs.argmax(axis=1) == data.labels).mean() >= 0.75


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moltmesh", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_infer_with_json_npy_and_png(node: NodeProcess, tmp_path: Path):
    (tmp_path / "x.json").write_text("[1, 2, 3]")
    np.save(tmp_path / "x.npy", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    for name in ("x.json", "x.npy"):
        done = run_cli("infer", "tiny", str(tmp_path / name), "--data-dir", str(node.data_dir))
        assert done.returncode == 0, done.stderr
        assert "route local" in done.stdout
    from PIL import Image

    from moltmesh.bundled import defects

    patch = defects.generate(defects.TEST_SEED, 1).images[0, 0]
    Image.fromarray((patch * 255).astype(np.uint8)).save(tmp_path / "patch.png")
    done = run_cli(
        "infer",
        "defects",
        str(tmp_path / "patch.png"),
        "--url",
        node.url,
        "--token",
        node.token,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert any(label in done.stdout for label in defects.LABELS)


def test_cli_errors_are_one_line(node: NodeProcess, tmp_path: Path):
    done = run_cli(
        "infer", "tiny", str(tmp_path / "missing.npy"), "--url", node.url, "--token", node.token
    )
    assert done.returncode == 2 and "does not exist" in done.stderr
    done = run_cli("infer", "tiny", str(tmp_path / "x.npy"), "--url", node.url, "--token", "bad")
    assert done.returncode == 2 and "401" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_models_list(model_repo: Path, tmp_path: Path):
    done = run_cli(
        "models", "list", "--data-dir", str(tmp_path), "--model-repository", str(model_repo)
    )
    assert done.returncode == 0, done.stderr
    for name in ("tiny", "slow", "defects", "defects-light"):
        assert name in done.stdout


def test_oversized_body_is_refused_with_413(tmp_path: Path, model_repo: Path):
    env = {"MOLTMESH_API_MAX_BODY_BYTES": "4096"}
    with running_node(tmp_path, "--model-repository", str(model_repo), env=env) as proc:
        body = json_infer([0.5] * 3000, [1000, 3])
        status, _, reply = raw(proc, "POST", "/v2/models/tiny/infer", body, token=proc.token)
        assert status == 413 and "4096" in json.loads(reply)["error"]
        assert raw(proc, "GET", "/v2/health/ready")[0] == 200


def metric(node: NodeProcess, name: str) -> float:
    for line in node.client().request("GET", "/metrics")[2].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


def wait_for_metric(node: NodeProcess, name: str, value: float, timeout: float = 20) -> None:
    """Poll /metrics until ``name`` reaches ``value`` (an observed state, not a fixed sleep)."""
    import time

    end = time.monotonic() + timeout
    while metric(node, name) < value:
        assert time.monotonic() < end, f"{name} never reached {value}"
        time.sleep(0.01)


def slow_request(node: NodeProcess, results: list) -> threading.Thread:
    x = np.ones((4096, 512), dtype=np.float32)

    def go() -> None:
        try:
            results.append(node.client().infer("slow", {"x": x}).outputs["y"].shape)
        except ClientError as e:
            results.append(e.status)

    t = threading.Thread(target=go)
    t.start()
    return t


def test_full_queue_gives_429_with_retry_after(tmp_path: Path, model_repo: Path):
    env = {"MOLTMESH_RUNTIME_MAX_INFLIGHT": "1", "MOLTMESH_RUNTIME_MAX_QUEUE": "0"}
    with running_node(tmp_path, "--model-repository", str(model_repo), env=env) as proc:
        results: list = []
        first = slow_request(proc, results)
        wait_for_metric(proc, "moltmesh_inflight", 1)
        status, headers, reply = raw(
            proc, "POST", "/v2/models/tiny/infer", json_infer([1, 2, 3], [1, 3]), token=proc.token
        )
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert "queue is full" in json.loads(reply)["error"]
        first.join(60)
        assert results == [(4096, 512)]


def test_sigterm_finishes_requests_in_flight(tmp_path: Path, model_repo: Path):
    env = {"MOLTMESH_RUNTIME_MAX_INFLIGHT": "1"}
    with running_node(tmp_path, "--model-repository", str(model_repo), env=env) as proc:
        results: list = []
        threads = [slow_request(proc, results)]
        wait_for_metric(proc, "moltmesh_inflight", 1)
        threads.append(slow_request(proc, results))
        wait_for_metric(proc, "moltmesh_queue_depth", 1)
        assert proc.stop() == 0
        for t in threads:
            t.join(60)
        assert results == [(4096, 512), (4096, 512)]
        assert any("stopping" in line for line in proc.stdout)
        assert not (tmp_path / "api-url").exists()


def test_tls_api(tmp_path: Path, model_repo: Path):
    cert, key = make_self_signed(tmp_path)
    with running_node(
        tmp_path / "d",
        "--model-repository",
        str(model_repo),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    ) as proc:
        assert proc.url.startswith("https://")
        client = Client(proc.url, proc.token, cafile=cert)
        assert client.model_metadata("tiny")["name"] == "tiny"
        with pytest.raises(ClientError):  # an unverified certificate is refused by the client
            Client(proc.url, proc.token).model_metadata("tiny")


def make_self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_full_queue_refuses_before_reading_the_body(tmp_path: Path, model_repo: Path):
    """A request that cannot be admitted gets its 429 as soon as its headers arrive: the node
    does not buffer (up to api.max_body_bytes of) a body it will not use."""
    env = {"MOLTMESH_RUNTIME_MAX_INFLIGHT": "1", "MOLTMESH_RUNTIME_MAX_QUEUE": "0"}
    with running_node(tmp_path, "--model-repository", str(model_repo), env=env) as proc:
        results: list = []
        first = slow_request(proc, results)
        wait_for_metric(proc, "moltmesh_inflight", 1)
        host, port = proc.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(
                f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {proc.token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: 10000000\r\n\r\n".encode()
                + b"{" * 1000
            )  # most of the body never comes
            head = s.recv(4096).decode("latin-1")
        assert head.startswith("HTTP/1.1 429"), head
        first.join(60)
        assert results == [(4096, 512)]
