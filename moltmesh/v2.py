"""The KServe/Triton v2 inference protocol's message bodies, as pure functions.

Parses an infer request (JSON tensors and the binary tensor data extension) into numpy arrays and
encodes the response, so that existing v2 clients (``tritonclient``, KServe) work unchanged. No I/O
here: ``moltmesh.api`` does HTTP. Every problem with a request raises ``V2Error`` with a message
that names the offending field; the API turns it into a 400 with ``{"error": message}``.

Binary extension: the HTTP header ``Inference-Header-Content-Length`` gives the length of the JSON
header at the start of the body; each input whose ``parameters.binary_data_size`` is set takes that
many bytes, in input order, from the rest. Outputs are returned binary when the output asks
(``parameters.binary_data``) or the request asks for all (``parameters.binary_data_output``).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtimes.base import V2_DATATYPES, numpy_dtype
from runtimes.base import v2_datatype as base_v2_datatype

HEADER_LENGTH = "Inference-Header-Content-Length"

DTYPES: dict[str, np.dtype] = {
    name: dt if dt.kind in "bO" else dt.newbyteorder("<")
    for name, dt in ((name, numpy_dtype(name)) for name in V2_DATATYPES)
}
"""v2 datatype name -> numpy dtype as it travels: binary tensors are little-endian on any host."""
_V2_NAMES = {dt.newbyteorder("="): name for name, dt in DTYPES.items() if name != "BYTES"}
_LITTLE_ENDIAN = sys.byteorder == "little"
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder, not one per response


class V2Error(ValueError):
    """The request breaks the v2 protocol; the message names the field at fault."""


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    """A decoded infer request. ``outputs`` is None when the client wants every output."""

    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] | None
    binary_output: bool
    request_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def v2_datatype(dtype: np.dtype) -> str:
    """The v2 datatype name of a numpy dtype (object arrays are BYTES)."""
    name = _V2_NAMES.get(dtype)  # native-order dtypes: one lookup, no new dtype object
    if name is not None:
        return name
    try:
        return base_v2_datatype(dtype)
    except ValueError as e:
        raise V2Error(str(e)) from None


def parse_infer_request(body: bytes, header_length: int | None) -> InferRequest:
    """Decode a v2 infer request body; ``header_length`` is the binary extension's header."""
    if header_length is None:
        header_bytes, binary = body, b""
    else:
        if not 0 <= header_length <= len(body):
            raise V2Error(f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes")
        header_bytes, binary = body[:header_length], body[header_length:]
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise V2Error(f"request body is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise V2Error("request body must be a JSON object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise V2Error("'inputs' must be a non-empty list")
    parameters = _parameters(header, "request")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, raw in enumerate(raw_inputs):
        name, array, used = _decode_input(raw, i, binary, offset)
        if name in inputs:
            raise V2Error(f"input {name!r} is given twice")
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise V2Error(f"{len(binary) - offset} bytes of binary data belong to no input")
    binary_output = bool(parameters.get("binary_data_output", False))
    outputs = None
    if "outputs" in header:
        raw_outputs = header["outputs"]
        if not isinstance(raw_outputs, list):
            raise V2Error("'outputs' must be a list")
        outputs = [_decode_output(raw, i, binary_output) for i, raw in enumerate(raw_outputs)]
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error("'id' must be a string")
    return InferRequest(inputs, outputs, binary_output, request_id, parameters)


def _parameters(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise V2Error(f"{where} 'parameters' must be an object")
    return params


def _decode_input(raw: Any, i: int, binary: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(raw, dict):
        raise V2Error(f"inputs[{i}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise V2Error(f"inputs[{i}] needs a 'name'")
    datatype = raw.get("datatype")
    if datatype not in DTYPES:
        raise V2Error(f"input {name!r}: unknown datatype {datatype!r}")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise V2Error(f"input {name!r}: 'shape' must be a list of non-negative integers")
    count = math.prod(shape)
    params = _parameters(raw, f"input {name!r}")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise V2Error(f"input {name!r}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise V2Error(f"input {name!r}: binary_data_size {size} runs past the body's end")
        chunk = binary[offset : offset + size]
        return name, _from_binary(name, datatype, shape, count, chunk), size
    if "data" not in raw:
        raise V2Error(f"input {name!r} has neither 'data' nor binary_data_size")
    return name, _from_json(name, datatype, shape, count, raw["data"]), 0


def _from_json(name: str, datatype: str, shape: list[int], count: int, data: Any) -> np.ndarray:
    if datatype == "BYTES":
        flat = np.array(data, dtype=object).ravel()
        if not all(isinstance(v, str) for v in flat):
            raise V2Error(f"input {name!r}: BYTES data must be strings")
        array = np.array([v.encode() for v in flat] or [], dtype=object)
    else:
        try:
            array = np.asarray(data, dtype=DTYPES[datatype]).ravel()
        except (TypeError, ValueError, OverflowError) as e:
            raise V2Error(f"input {name!r}: data is not {datatype}: {e}") from None
        # All-boolean data is refused for other datatypes; only look when the first value is one
        # (converting the whole list a second time costs as much as the conversion itself).
        if datatype != "BOOL" and _first_leaf_is_bool(data) and np.asarray(data).dtype == np.bool_:
            raise V2Error(f"input {name!r}: data is boolean, datatype says {datatype}")
    if array.size != count:
        raise V2Error(f"input {name!r}: shape {shape} needs {count} values, data has {array.size}")
    return array.reshape(shape)


def _first_leaf_is_bool(data: Any) -> bool:
    while isinstance(data, list) and data:
        data = data[0]
    return isinstance(data, bool)


def _from_binary(
    name: str, datatype: str, shape: list[int], count: int, chunk: bytes
) -> np.ndarray:
    if datatype == "BYTES":
        items = _unpack_bytes(name, chunk)
        if len(items) != count:
            raise V2Error(f"input {name!r}: shape {shape} needs {count} strings, got {len(items)}")
        return np.array(items, dtype=object).reshape(shape)
    dtype = DTYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise V2Error(
            f"input {name!r}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"binary_data_size is {len(chunk)}"
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _unpack_bytes(name: str, chunk: bytes) -> list[bytes]:
    items, pos = [], 0
    while pos < len(chunk):
        if pos + 4 > len(chunk):
            raise V2Error(f"input {name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", chunk, pos)
        pos += 4
        if pos + length > len(chunk):
            raise V2Error(f"input {name!r}: BYTES element runs past its data")
        items.append(chunk[pos : pos + length])
        pos += length
    return items


def _decode_output(raw: Any, i: int, binary_default: bool) -> RequestedOutput:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise V2Error(f"outputs[{i}] must be an object with a 'name'")
    params = _parameters(raw, f"output {raw['name']!r}")
    return RequestedOutput(raw["name"], bool(params.get("binary_data", binary_default)))


def encode_infer_response(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray],
    binary: Mapping[str, bool],
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """Encode a response; returns ``(body, header_length)``, the latter None when all JSON.

    ``outputs`` are in the order they should appear; ``binary[name]`` says how each travels.
    """
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    if parameters:
        response["parameters"] = dict(parameters)
    tensors, blobs = [], []
    for name, array in outputs.items():
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": v2_datatype(array.dtype),
            "shape": list(array.shape),
        }
        if binary.get(name, False):
            blob = _to_binary(array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif array.dtype == np.object_:
            tensor["data"] = [_text(v) for v in array.ravel()]
        else:
            tensor["data"] = array.ravel().tolist()
        tensors.append(tensor)
    response["outputs"] = tensors
    header = _COMPACT_JSON.encode(response).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _to_binary(array: np.ndarray) -> bytes:
    if array.dtype == np.object_:
        parts = []
        for v in array.ravel():
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    if _LITTLE_ENDIAN and array.dtype.byteorder in "=|":
        return array.tobytes()  # already little-endian; tobytes copies in C order
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def tensor_metadata(specs: Sequence[Any]) -> list[dict[str, Any]]:
    """v2 metadata for tensor specs (objects with name, datatype and shape)."""
    return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]
