import contextlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from moltmesh import v2
from moltmesh.client import decode_answer


def binary_request(arrays: dict[str, np.ndarray], extra: dict | None = None) -> tuple[bytes, int]:
    inputs, blobs = [], []
    for name, a in arrays.items():
        blob = a.tobytes()
        inputs.append(
            {
                "name": name,
                "datatype": v2.v2_datatype(a.dtype),
                "shape": list(a.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = json.dumps({"inputs": inputs, **(extra or {})}).encode()
    return header + b"".join(blobs), len(header)


def test_json_request_with_nested_or_flat_data():
    for data in ([[1, 2, 3], [4, 5, 6]], [1, 2, 3, 4, 5, 6]):
        tensor = {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": data}
        body = json.dumps({"id": "r1", "inputs": [tensor]}).encode()
        req = v2.parse_infer_request(body, None)
        assert req.request_id == "r1"
        assert req.outputs is None and not req.binary_output
        np.testing.assert_array_equal(
            req.inputs["x"], np.arange(1, 7, dtype=np.float32).reshape(2, 3)
        )
        assert req.inputs["x"].dtype == np.float32


def test_binary_request_with_two_inputs_and_requested_outputs():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[7], [9]], dtype=np.int64)
    body, n = binary_request(
        {"a": a, "b": b},
        {"outputs": [{"name": "p", "parameters": {"binary_data": True}}, {"name": "q"}]},
    )
    req = v2.parse_infer_request(body, n)
    np.testing.assert_array_equal(req.inputs["a"], a)
    np.testing.assert_array_equal(req.inputs["b"], b)
    assert [(o.name, o.binary) for o in req.outputs] == [("p", True), ("q", False)]


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (b'{"inputs": []}', None, "non-empty"),
        (b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}', None, "needs a 'name'"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP33", "shape": [1], "data": [1]}]}',
            None,
            "unknown datatype",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}',
            None,
            "non-negative",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1]}]}',
            None,
            "needs 2 values",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": ["a"]}]}',
            None,
            "not INT32",
        ),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', None, "neither"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},'
            b' {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            None,
            "twice",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            999,
            "Inference-Header-Content-Length",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],'
            b' "parameters": 3}',
            None,
            "'parameters'",
        ),
    ],
)
def test_malformed_requests_name_the_problem(body: bytes, header_length, message: str):
    with pytest.raises(v2.V2Error, match=message):
        v2.parse_infer_request(body, header_length)


def test_binary_sizes_must_match_shape_and_body():
    a = np.zeros((2, 3), dtype=np.float32)
    body, n = binary_request({"x": a})
    with pytest.raises(v2.V2Error, match="runs past"):
        v2.parse_infer_request(body[:-4], n)  # truncated
    with pytest.raises(v2.V2Error, match="belong to no input"):
        v2.parse_infer_request(body + b"\0\0\0\0", n)  # trailing garbage
    header = json.loads(body[:n])
    header["inputs"][0]["shape"] = [3, 3]
    fixed = json.dumps(header).encode()
    with pytest.raises(v2.V2Error, match="needs 36 bytes"):
        v2.parse_infer_request(fixed + body[n:], len(fixed))


def test_bytes_tensors_round_trip_both_ways():
    body = json.dumps(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["hi", "there"]}]}
    ).encode()
    req = v2.parse_infer_request(body, None)
    assert list(req.inputs["s"]) == [b"hi", b"there"]
    out, n = v2.encode_infer_response("m", "1", {"s": req.inputs["s"]}, {"s": True})
    header = json.loads(out[:n])
    assert header["outputs"][0]["datatype"] == "BYTES"
    assert out[n:] == b"\x02\x00\x00\x00hi\x05\x00\x00\x00there"


dtypes = st.sampled_from(
    [np.float32, np.float16, np.float64, np.int64, np.int32, np.uint8, np.int8, np.bool_]
)


@settings(max_examples=60, deadline=None)
@given(
    array=dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=3))),
    binary=st.booleans(),
)
def test_response_round_trips_through_the_client_decoder(array: np.ndarray, binary: bool):
    body, n = v2.encode_infer_response(
        "m", "3", {"y": array}, {"y": binary}, "id-1", {"route": "local"}
    )
    answer = decode_answer(body, str(n) if n is not None else None)
    assert answer.model == "m" and answer.version == "3"
    assert answer.parameters == {"route": "local"}
    assert answer.outputs["y"].shape == array.shape
    if binary or array.dtype.kind != "f":
        np.testing.assert_array_equal(answer.outputs["y"], array)
    else:  # JSON floats go through Python floats: equal up to the dtype's precision
        np.testing.assert_allclose(answer.outputs["y"], array, equal_nan=True, rtol=1e-3)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300), header_length=st.none() | st.integers(-5, 400))
def test_garbage_only_ever_raises_v2_error(body: bytes, header_length):
    with contextlib.suppress(v2.V2Error):
        v2.parse_infer_request(body, header_length)
