"""``moltmesh infer`` input files, read without a node: every accepted format gives the model's
arrays, and every bad file is one ``UsageError`` naming the file, the input and the datatype
(never a numpy traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moltmesh.cli import UsageError, main
from moltmesh.cli_infer import load_request

ROOT = Path(__file__).resolve().parents[2]
DEFECTS = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 32, 32]}]}
TWO = {
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "n", "datatype": "INT64", "shape": [-1]},
    ]
}


def write(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=content.dtype == object)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content))
    return path


def test_the_readme_example_is_a_v2_request_body():
    inputs, params = load_request(ROOT / "docs/examples/scratch.json", DEFECTS, None)
    body = json.loads((ROOT / "docs/examples/scratch.json").read_text())
    expected = np.asarray(body["inputs"][0]["data"], dtype=np.float32).reshape(1, 1, 32, 32)
    assert list(inputs) == ["image"] and inputs["image"].dtype == np.float32
    np.testing.assert_array_equal(inputs["image"], expected)
    assert params == body.get("parameters", {})


def test_the_three_json_shapes_give_the_same_arrays(tmp_path: Path):
    data = [[1.0, 2.0, 3.0]]
    v2 = {
        "inputs": [
            {"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]},
            {"name": "n", "datatype": "INT64", "shape": [1], "data": [7]},
        ],
        "parameters": {"urgency": 0.5},
    }
    by_v2, params = load_request(write(tmp_path, "a.json", v2), TWO, None)
    by_name, _ = load_request(write(tmp_path, "b.json", {"x": data, "n": [7]}), TWO, None)
    bare, _ = load_request(write(tmp_path, "c.json", data[0]), TWO, "x")
    assert params == {"urgency": 0.5}
    for got in (by_v2, by_name):
        assert got["x"].dtype == np.float32 and got["n"].dtype == np.int64
        np.testing.assert_array_equal(got["x"], np.array(data, np.float32))
        np.testing.assert_array_equal(got["n"], [7])
    np.testing.assert_array_equal(bare["x"], np.array(data, np.float32))  # batch axis added


def test_an_input_named_inputs_is_not_mistaken_for_a_v2_body(tmp_path: Path):
    meta = {"inputs": [{"name": "inputs", "datatype": "FP32", "shape": [-1, 2]}]}
    got, params = load_request(write(tmp_path, "a.json", {"inputs": [[1, 2]]}), meta, None)
    np.testing.assert_array_equal(got["inputs"], [[1.0, 2.0]])
    assert params == {}


BAD_FILES = [
    ("obj.npy", np.array([{"x": 1}, None], dtype=object), "holds an object array"),
    ("garbage.npy", b"this is not numpy at all", "is not a NumPy .npy file"),
    ("str.npy", np.array([["hello"] * 32] * 32), "cannot convert to FP32 for input 'image'"),
    ("hello.json", {"image": "hello"}, "cannot convert to FP32 for input 'image': it holds text"),
    ("ragged.json", {"image": [[1.0, 2.0], [3.0]]}, "rows of different lengths (ragged)"),
    ("obj.json", {"image": {"x": 1}}, "cannot convert to FP32 for input 'image': it holds obj"),
    ("null.json", {"image": [1.0, None]}, "cannot convert to FP32 for input 'image'"),
    ("bool.json", [True, False], "cannot convert to FP32 for input 'image': it holds booleans"),
    ("huge.json", [1e39], "beyond FP32's range"),
    ("other.json", {"label": [1]}, "model has no input 'label'"),
    ("bad.json", b"{not json", "is not valid JSON"),
    ("v2.json", {"inputs": [{"name": "image", "datatype": "FP32", "shape": [2], "data": [1]}]},
     "(a v2 request body): input 'image': shape [2] needs 2 values"),
    ("pic.png", b"\x89PNG but not really", "is not a readable image"),
    ("x.txt", b"1 2 3", "cannot read .txt files"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "needle"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_input_files_name_the_file_and_the_problem(
    tmp_path: Path, name: str, content: object, needle: str
):
    path = write(tmp_path, name, content)
    with pytest.raises(UsageError) as err:
        load_request(path, DEFECTS, None)
    assert needle in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("datatype", "value", "needle"),
    [("INT64", [1.5], "fractions"), ("UINT8", [300], "beyond UINT8's range"),
     ("BOOL", [2], "BOOL takes true/false"), ("BYTES", [1, 2], "BYTES inputs are text")],
)  # fmt: skip
def test_casts_that_would_change_values_are_refused(
    tmp_path: Path, datatype: str, value: list[object], needle: str
):
    meta = {"inputs": [{"name": "v", "datatype": datatype, "shape": [-1]}]}
    with pytest.raises(UsageError, match=needle):
        load_request(write(tmp_path, "v.json", value), meta, None)


def test_lossless_casts_are_made(tmp_path: Path):
    meta = {"inputs": [{"name": "v", "datatype": "BOOL", "shape": [-1]}]}
    got, _ = load_request(write(tmp_path, "v.json", [0, 1]), meta, None)
    assert got["v"].tolist() == [False, True]
    meta = {"inputs": [{"name": "v", "datatype": "BYTES", "shape": [-1]}]}
    got, _ = load_request(write(tmp_path, "w.npy", np.array(["a", "b"])), meta, None)
    assert got["v"].dtype == object and got["v"].tolist() == ["a", "b"]


def test_infer_refuses_a_url_without_scheme_and_a_missing_cacert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    source = write(tmp_path, "x.json", [1.0, 2.0, 3.0])
    code = main(["infer", "tiny", str(source), "--url", "localhost:8470", "--token", "t"])
    err = capsys.readouterr().err
    assert code == 2 and "needs http:// or https://" in err and "http://localhost:8470" in err
    missing = tmp_path / "ca.pem"
    argv = ["infer", "tiny", str(source), "--url", "https://127.0.0.1:9", "--token", "t"]
    assert main([*argv, "--cacert", str(missing)]) == 2
    assert f"CA certificate file {missing} does not exist" in capsys.readouterr().err
    missing.write_text("not a certificate")
    assert main([*argv, "--cacert", str(missing)]) == 2
    assert f"{missing} holds no usable PEM CA certificate" in capsys.readouterr().err


def test_infer_help_names_the_formats(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    out = capsys.readouterr().out
    assert '{"inputs": [{"name", "shape", "datatype", "data"}]}' in out and "--cacert" in out
