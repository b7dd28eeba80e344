"""A small synchronous client of a node's v2 HTTP API, for the CLI and scripts.

Blocking (urllib); one request per call. Errors from the node surface as ``ClientError`` carrying
the HTTP status and the node's ``{"error": ...}`` message.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moltmesh import v2
from moltmesh.identity import API_URL_FILE, TOKEN_FILE


class ClientError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InferAnswer:
    model: str
    version: str
    outputs: dict[str, np.ndarray]
    parameters: dict[str, Any]


def local_endpoint(data_dir: Path) -> tuple[str, str]:
    """The URL and token of the node whose data directory is ``data_dir``."""
    try:
        url = (data_dir / API_URL_FILE).read_text().strip()
    except OSError:
        raise ClientError(
            0, f"no running node found in {data_dir} (no {API_URL_FILE} file)"
        ) from None
    try:
        token = (data_dir / TOKEN_FILE).read_text().strip()
    except OSError:
        raise ClientError(0, f"cannot read the API token in {data_dir / TOKEN_FILE}") from None
    return url, token


def check_url(url: str) -> str:
    """``url`` without a trailing slash; ``ClientError`` unless it is an http(s) URL with a
    host (``localhost:8470`` alone would be read as scheme "localhost")."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(0, f"node URL {url!r} needs http:// or https:// (e.g. http://{url})")
    return url.rstrip("/")


def tls_context(cafile: Path | None) -> ssl.SSLContext | None:
    """A context trusting the CA certificate(s) in ``cafile`` (PEM), or None (urllib's default:
    the system's CAs). ``ClientError`` naming the file when it is missing or not PEM."""
    if cafile is None:
        return None
    if not cafile.is_file():
        raise ClientError(0, f"CA certificate file {cafile} does not exist")
    try:
        return ssl.create_default_context(cafile=str(cafile))
    except ssl.SSLError as e:
        raise ClientError(0, f"{cafile} holds no usable PEM CA certificate: {e.reason}") from None
    except OSError as e:
        raise ClientError(0, f"cannot read CA certificate file {cafile}: {e.strerror}") from None


def unreachable(url: str, reason: object) -> ClientError:
    """The error for a node that gave no HTTP answer; a failed certificate check says how to
    trust a private CA."""
    hint = ""
    if isinstance(reason, ssl.SSLCertVerificationError):
        hint = " (a certificate of a private CA? trust that CA with --cacert FILE)"
    return ClientError(0, f"cannot reach {url}: {reason}{hint}")


class Client:
    def __init__(self, url: str, token: str, timeout_s: float = 60.0, cafile: Path | None = None):
        """``ClientError`` if ``url`` is not an http(s) URL or ``cafile`` is unusable."""
        self.url = check_url(url)
        self.token = token
        self.timeout_s = timeout_s
        self._ssl = tls_context(cafile)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self._ssl) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace") or e.reason
            raise ClientError(e.code, message) from None
        except urllib.error.URLError as e:
            raise unreachable(self.url, e.reason) from None

    def get_json(self, path: str) -> Any:
        return json.loads(self.request("GET", path)[2])

    def model_metadata(self, model: str) -> dict[str, Any]:
        return self.get_json(f"/v2/models/{_quote(model)}")

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        binary: bool = True,
        parameters: dict[str, Any] | None = None,
    ) -> InferAnswer:
        """Send one infer request; binary tensors both ways unless ``binary`` is False.

        BYTES inputs are object arrays of ``bytes`` or ``str`` (sent as UTF-8); BYTES outputs
        come back as object arrays (``bytes`` from binary, ``str`` from JSON).
        """
        tensors, blobs = [], []
        for name, array in inputs.items():
            tensor: dict[str, Any] = {
                "name": name,
                "datatype": v2.v2_datatype(array.dtype),
                "shape": list(array.shape),
            }
            if binary:
                blob = v2.binary_tensor(array)
                tensor["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                tensor["data"] = v2.json_data(array)
            tensors.append(tensor)
        params = dict(parameters or {})
        if binary:
            params["binary_data_output"] = True
        header = json.dumps({"inputs": tensors, "parameters": params}).encode()
        headers = {"Content-Type": "application/octet-stream" if binary else "application/json"}
        if binary:
            headers[v2.HEADER_LENGTH] = str(len(header))
        _, resp_headers, body = self.request(
            "POST", f"/v2/models/{_quote(model)}/infer", header + b"".join(blobs), headers
        )
        return decode_answer(body, resp_headers.get(v2.HEADER_LENGTH))


def _quote(model: str) -> str:
    """A model name as one URL path segment ("a?b" is a name, not a query)."""
    return urllib.parse.quote(model, safe="")


def decode_answer(body: bytes, header_length: str | None) -> InferAnswer:
    """Decode a v2 infer response (JSON or binary extension) into arrays."""
    split = int(header_length) if header_length else len(body)
    response = json.loads(body[:split])
    outputs, offset = {}, split
    for tensor in response["outputs"]:
        dtype = v2.DTYPES[tensor["datatype"]]
        size = tensor.get("parameters", {}).get("binary_data_size")
        if size is not None:
            chunk = body[offset : offset + size]
            if dtype == np.object_:
                array = np.array(v2.unpack_bytes(chunk) or [], dtype=object)
            else:
                array = np.frombuffer(chunk, dtype=dtype)
            offset += size
        else:
            array = np.asarray(tensor["data"], dtype=dtype)
        outputs[tensor["name"]] = array.reshape(tensor["shape"])
    return InferAnswer(
        response["model_name"],
        response.get("model_version", ""),
        outputs,
        response.get("parameters", {}),
    )
