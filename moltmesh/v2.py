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

import contextlib
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


MAX_DIMS = 32
"""Most dimensions an input tensor may have (numpy's own limit is 64; no model needs more)."""


class V2Error(ValueError):
    """The request breaks the v2 protocol; the message names the field at fault."""


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(slots=True)
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
    """Decode a v2 infer request body; ``header_length`` is the binary extension's header.

    Binary tensors become read-only arrays viewing ``body`` (no copy). A binary request whose
    inputs are all fixed-size tensors is decoded through a plan cached by its exact header bytes
    (clients send the same header for every request of a shape): the JSON is parsed and checked
    once, later requests only check the body's length and view their tensors.
    """
    if (
        header_length is not None
        and 0 <= header_length <= MAX_PLANNED_HEADER
        and header_length <= len(body)
        and type(body) is bytes  # a bytearray's slice cannot be a dict key
    ):
        plan = _PLANS.get(body[:header_length])
        if plan is not None and len(body) - header_length == plan.binary_bytes:
            return plan.apply(body, header_length)
    return _parse_full(body, header_length)


def _parse_full(body: bytes, header_length: int | None) -> InferRequest:
    if header_length is None:
        header_bytes, binary = body, memoryview(b"")
    else:
        if not 0 <= header_length <= len(body):
            raise V2Error(f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes")
        header_bytes, binary = body[:header_length], memoryview(body)[header_length:]
    try:
        header = json.loads(header_bytes)
    except RecursionError:
        raise V2Error("request body is not valid JSON: nested too deep") from None
    except ValueError as e:  # bad JSON or UTF-8, or an integer over Python's digit limit
        raise V2Error(f"request body is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise V2Error("request body must be a JSON object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise V2Error("'inputs' must be a non-empty list")
    parameters = _parameters(header, "request")
    inputs: dict[str, np.ndarray] = {}
    plans: list[_InputPlan] | None = [] if header_length is not None else None
    offset = 0
    for i, raw in enumerate(raw_inputs):
        name, array, used = _decode_input(raw, i, binary, offset)
        if name in inputs:
            raise V2Error(f"input {name!r} is given twice")
        inputs[name] = array
        if plans is not None:
            if (used == 0 and array.size) or array.dtype == np.object_:
                plans = None  # JSON data or BYTES: not a fixed layout
            else:
                plans.append(_InputPlan(name, array.dtype, array.shape, array.size, used))
        offset += used
    if offset != len(binary):
        raise V2Error(f"{len(binary) - offset} bytes of binary data belong to no input")
    binary_output = _flag(parameters, "binary_data_output", False, "request")
    outputs = None
    if "outputs" in header:
        raw_outputs = header["outputs"]
        if not isinstance(raw_outputs, list):
            raise V2Error("'outputs' must be a list")
        outputs = [_decode_output(raw, i, binary_output) for i, raw in enumerate(raw_outputs)]
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error("'id' must be a string")
    if plans is not None and header_length is not None and header_length <= MAX_PLANNED_HEADER:
        _remember(
            bytes(header_bytes),
            _HeaderPlan(
                tuple(plans), offset, None if outputs is None else tuple(outputs),
                binary_output, request_id, parameters,
            ),
        )  # fmt: skip
    return InferRequest(inputs, outputs, binary_output, request_id, dict(parameters))


@dataclass(frozen=True, slots=True)
class _InputPlan:
    """Where one binary input lies in the body and what it is."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    count: int
    size: int


@dataclass(frozen=True, slots=True)
class _HeaderPlan:
    """A checked request header, reusable for any body of ``binary_bytes`` after it.

    Shared between requests: ``apply`` hands out fresh lists and dicts, never these.
    """

    inputs: tuple[_InputPlan, ...]
    binary_bytes: int
    outputs: tuple[RequestedOutput, ...] | None
    binary_output: bool
    request_id: str | None
    parameters: dict[str, Any]

    def apply(self, body: bytes, header_length: int) -> InferRequest:
        if len(self.inputs) == 1:  # the common case: no loop, no offset bookkeeping
            p = self.inputs[0]
            array = np.frombuffer(body, p.dtype, p.count, header_length).reshape(p.shape)
            inputs = {p.name: array}
        else:
            inputs = {}
            offset = header_length
            for p in self.inputs:
                inputs[p.name] = np.frombuffer(body, p.dtype, p.count, offset).reshape(p.shape)
                offset += p.size
        outputs = None if self.outputs is None else list(self.outputs)
        return InferRequest(
            inputs, outputs, self.binary_output, self.request_id, dict(self.parameters)
        )


MAX_PLANNED_HEADER = 4096
"""Headers longer than this (bytes) are parsed every time, never cached."""
MAX_PLANS = 256
_PLANS: dict[bytes, _HeaderPlan] = {}


def _remember(header: bytes, plan: _HeaderPlan) -> None:
    """Cache ``plan`` under its header; the oldest plan goes when the cache is full."""
    _bounded_put(_PLANS, header, plan, MAX_PLANS)


def _bounded_put(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """``cache[key] = value``, first dropping the oldest entry when ``cache`` holds ``limit``."""
    if len(cache) >= limit:
        with contextlib.suppress(KeyError, RuntimeError, StopIteration):  # a racing thread
            del cache[next(iter(cache))]
    cache[key] = value


def _parameters(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise V2Error(f"{where} 'parameters' must be an object")
    return params


def _decode_input(raw: Any, i: int, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(raw, dict):
        raise V2Error(f"inputs[{i}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise V2Error(f"inputs[{i}] needs a 'name'")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise V2Error(f"input {name!r}: unknown datatype {datatype!r}")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise V2Error(f"input {name!r}: 'shape' must be a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise V2Error(f"input {name!r}: 'shape' has {len(shape)} dimensions, at most {MAX_DIMS}")
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
        try:
            array = np.array([v.encode() for v in flat] or [], dtype=object)
        except UnicodeEncodeError as e:  # a lone surrogate such as "\ud800"
            raise V2Error(f"input {name!r}: BYTES data is not valid Unicode: {e}") from None
    elif DTYPES[datatype].kind == "f":
        array = _json_floats(name, datatype, data)
    else:
        array = _json_exact(name, datatype, data)
    if array.size != count:
        raise V2Error(f"input {name!r}: shape {shape} needs {count} values, data has {array.size}")
    return array.reshape(shape)


def _json_floats(name: str, datatype: str, data: Any) -> np.ndarray:
    """Float data, converted in one pass (the JSON path's hot spot). Refused: null (numpy makes
    it NaN), numbers beyond the datatype's range (numpy makes them infinite: 1e39 in FP32,
    70000 in FP16) and data that starts with text or booleans (only the first value is looked
    at: a second full pass over the Python values costs as much again). NaN and Infinity
    literals stay what they are, as binary data can carry them too. The extra checks run only
    when the converted array holds a non-finite value."""
    try:
        with np.errstate(over="ignore"):  # out of range: refused below, not warned about
            array = np.asarray(data, dtype=DTYPES[datatype]).ravel()
    except (TypeError, ValueError, OverflowError) as e:
        raise V2Error(f"input {name!r}: data is not {datatype}: {e}") from None
    leaf = _first_leaf(data)
    if isinstance(leaf, str):
        raise V2Error(f"input {name!r}: data is not {datatype}: it holds text")
    if isinstance(leaf, bool) and np.asarray(data).dtype == np.bool_:
        raise V2Error(f"input {name!r}: data is boolean, datatype says {datatype}")
    if not np.isfinite(array).all():
        if np.asarray(data).dtype == np.object_:
            raise V2Error(f"input {name!r}: data is not {datatype}: it holds null")
        sent = np.asarray(data, dtype=np.float64).ravel()
        if (np.isinf(array) & np.isfinite(sent)).any():
            raise V2Error(f"input {name!r}: data holds a number beyond {datatype}'s range")
    return array


def _json_exact(name: str, datatype: str, data: Any) -> np.ndarray:
    """Integer or BOOL data, refusing what a cast would change: null, text, fractions, values
    out of the datatype's range, booleans for integers, and BOOL values other than 0/1.

    ``raw`` (numpy's own reading) tells what the values are; the array itself is converted
    straight from the Python values, which keeps 64-bit integers exact (numpy reads a list
    mixing uint64- and int64-sized integers as float64)."""
    dtype, where = DTYPES[datatype], f"input {name!r}"
    try:
        raw = np.asarray(data)
    except (TypeError, ValueError) as e:
        raise V2Error(f"{where}: data is not {datatype}: {e}") from None
    kind = raw.dtype.kind
    if kind in "US" or (kind == "O" and any(isinstance(v, str) for v in raw.flat)):
        raise V2Error(f"{where}: data is not {datatype}: it holds text")
    if kind == "O" and any(v is None for v in raw.flat):
        raise V2Error(f"{where}: data is not {datatype}: it holds null")
    if kind == "b" and datatype != "BOOL":
        raise V2Error(f"{where}: data is boolean, datatype says {datatype}")
    if (datatype == "BOOL" and kind != "b") and (
        kind not in "iu" or (raw.size and (raw.min() < 0 or raw.max() > 1))
    ):
        raise V2Error(f"{where}: BOOL data must be true/false (or 0/1)")
    try:
        array = np.asarray(data, dtype=dtype)
    except OverflowError:
        raise V2Error(f"{where}: data holds values out of the range of {datatype}") from None
    except (TypeError, ValueError) as e:
        raise V2Error(f"{where}: data is not {datatype}: {e}") from None
    if kind == "f" and not (np.isfinite(raw).all() and (array == raw).all()):
        raise V2Error(f"{where}: {datatype} data must be integers in its range")
    return array.ravel()


def _first_leaf(data: Any) -> Any:
    while isinstance(data, list) and data:
        data = data[0]
    return data


def _from_binary(
    name: str, datatype: str, shape: list[int], count: int, chunk: memoryview
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


def _unpack_bytes(name: str, chunk: memoryview) -> list[bytes]:
    items, pos = [], 0
    while pos < len(chunk):
        if pos + 4 > len(chunk):
            raise V2Error(f"input {name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", chunk, pos)
        pos += 4
        if pos + length > len(chunk):
            raise V2Error(f"input {name!r}: BYTES element runs past its data")
        items.append(bytes(chunk[pos : pos + length]))
        pos += length
    return items


def _decode_output(raw: Any, i: int, binary_default: bool) -> RequestedOutput:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise V2Error(f"outputs[{i}] must be an object with a 'name'")
    where = f"output {raw['name']!r}"
    params = _parameters(raw, where)
    return RequestedOutput(raw["name"], _flag(params, "binary_data", binary_default, where))


def _flag(params: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    """A boolean parameter; it must be a JSON boolean ("false" is not False)."""
    value = params.get(key, default)
    if type(value) is not bool:
        raise V2Error(f"{where} parameter {key!r} must be true or false, got {value!r}")
    return value


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
    When every output travels binary and every parameter is a string, the JSON header depends
    only on the model, the parameters and the outputs' names, dtypes and shapes: it is built
    once per such key and reused (byte-for-byte what the general encoder writes).
    """
    key: tuple[Any, ...] = (
        model_name, model_version, tuple(parameters.items()) if parameters else (),
    )  # fmt: skip
    for name, array in outputs.items():
        dtype = array.dtype
        if dtype.kind == "O" or not binary.get(name, False):
            return _encode_general(
                model_name, model_version, outputs, binary, request_id, parameters
            )
        key += (name, dtype, array.shape)
    try:
        template = _RESPONSE_HEADERS.get(key)
    except TypeError:  # an unhashable parameter value (a list, an object): never cached
        template = None
    if template is None:
        # Only string parameters are cached: 1, 1.0 and True are equal keys but encode
        # differently (a key holding only strings never equals one holding anything else).
        if len(key) == 3 or not all(type(v) is str for _, v in key[2]):
            return _encode_general(
                model_name, model_version, outputs, binary, request_id, parameters
            )
        template = _response_template(model_name, model_version, outputs, parameters)
        _bounded_put(_RESPONSE_HEADERS, key, template, MAX_RESPONSE_TEMPLATES)
    prefix, suffix = template
    if request_id is None:
        header = prefix + suffix
    else:
        header = b"".join((prefix, b',"id":', _COMPACT_JSON.encode(request_id).encode(), suffix))
    if len(outputs) == 1:
        for array in outputs.values():
            return header + binary_tensor(array), len(header)
    return b"".join([header, *(binary_tensor(a) for a in outputs.values())]), len(header)


def _response_template(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray],
    parameters: Mapping[str, Any] | None,
) -> tuple[bytes, bytes]:
    """The all-binary header without its id, split where an ``"id"`` field would go."""
    body, header_length = _encode_general(
        model_name, model_version, outputs, dict.fromkeys(outputs, True), None, parameters
    )
    assert header_length is not None  # every output is binary
    split = len(_COMPACT_JSON.encode({"model_name": model_name, "model_version": model_version}))
    return body[: split - 1], body[split - 1 : header_length]


MAX_RESPONSE_TEMPLATES = 256
_RESPONSE_HEADERS: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}


def _encode_general(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray],
    binary: Mapping[str, bool],
    request_id: str | None,
    parameters: Mapping[str, Any] | None,
) -> tuple[bytes, int | None]:
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
            blob = binary_tensor(array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = json_data(array)
        tensors.append(tensor)
    response["outputs"] = tensors
    header = _COMPACT_JSON.encode(response).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def json_data(array: np.ndarray) -> list[Any]:
    """``array``'s values as a flat JSON list (BYTES elements as text, bytes decoded as UTF-8)."""
    if array.dtype == np.object_:
        return [_text(v) for v in array.ravel()]
    return array.ravel().tolist()


def unpack_bytes(chunk: bytes | memoryview) -> list[bytes]:
    """The elements of a binary BYTES tensor (the inverse of ``binary_tensor``); ``V2Error``
    when the lengths do not add up."""
    return _unpack_bytes("tensor", memoryview(chunk))


def binary_tensor(array: np.ndarray) -> bytes:
    """``array`` as the binary extension carries it: little-endian values in C order, or for
    BYTES (object arrays of bytes or str) each element as a 4-byte little-endian length and
    its bytes (str as UTF-8)."""
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
