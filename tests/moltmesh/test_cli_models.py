"""``moltmesh models list|quantize`` in process: tensors listed, bundled package left untouched."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from moltmesh import cli
from moltmesh.bundled import MODELS_DIR


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # rich wraps table cells to the terminal width


def _bundled_files() -> set[Path]:
    return {p for p in MODELS_DIR.rglob("*") if p.is_file()}


def test_list_shows_tensors_and_problems(
    tmp_path: Path, model_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "tiny", repo / "tiny")
    (repo / "broken" / "1").mkdir(parents=True)  # a version directory without a model file
    code = cli.main(
        ["models", "list", "--model-repository", str(repo), "--data-dir", str(tmp_path / "d")]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "inputs" in out and "outputs" in out
    tiny = next(line for line in out.splitlines() if "│ tiny " in line)
    assert "x FP32[-1,3]" in tiny and "1, 2" in tiny
    # every output tensor of tiny, one per line in its cell
    assert "logits FP32[-1,4]" in out and "probs FP32[-1,4]" in out
    assert "image FP32[-1,1,32,32]" in out  # the bundled models are listed too
    assert f"skipped: invalid model at {repo / 'broken'}" in out


def test_list_on_a_narrow_terminal_is_one_block_per_model(
    tmp_path: Path, model_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # also what a pipe gets
    argv = ["models", "list", "--model-repository", str(model_repo), "--data-dir", str(tmp_path)]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index("tiny")
    assert lines[at + 1].split() == ["versions", "1,", "2"]
    assert lines[at + 3].split() == ["inputs", "x", "FP32[-1,3]"]
    assert lines[at + 4].split() == ["outputs", "probs", "FP32[-1,4]"]
    assert lines[at + 5].split() == ["logits", "FP32[-1,4]"]  # in the model's order
    assert lines[at + 7].split() == ["path", str(model_repo / "tiny")]
    assert "defects-light" in lines  # the bundled models too


def test_list_and_quantize_name_a_missing_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "srv" / "models"
    for action in (["list"], ["quantize", "tiny"]):
        argv = ["models", *action, "--model-repository", str(missing), "--data-dir", str(tmp_path)]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"runtime.model_repository: {missing} does not exist" in err


def test_quantize_refuses_to_write_into_the_bundled_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _bundled_files()
    code = cli.main(["models", "quantize", "defects-light", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "'defects-light' is bundled with moltmesh" in err and "--output DIR" in err
    assert "\n" not in err.strip()
    code = cli.main(
        ["models", "quantize", "defects-light", "--data-dir", str(tmp_path),
         "--output", str(MODELS_DIR / "mine")]
    )  # fmt: skip
    assert code == 2 and "inside the bundled models" in capsys.readouterr().err
    assert _bundled_files() == before


def test_quantize_bundled_model_into_output_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _bundled_files()
    out = tmp_path / "mine"
    argv = ["models", "quantize", "defects-light", "--data-dir", str(tmp_path / "d")]
    assert cli.main([*argv, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    copy = out / "defects-light"
    assert f"copied {MODELS_DIR / 'defects-light'} to {copy}" in printed
    assert sorted(p.name for p in (copy / "1").iterdir()) == [
        "model.fp16.onnx",
        "model.int8.onnx",
        "model.onnx",
    ]
    assert (copy / "model.toml").read_bytes() == (
        MODELS_DIR / "defects-light" / "model.toml"
    ).read_bytes()
    ops = {node.op_type for node in onnx.load(str(copy / "1" / "model.int8.onnx")).graph.node}
    assert "QuantizeLinear" in ops  # static (QDQ), with the bundled calibration data
    assert _bundled_files() == before  # the package is untouched


def test_quantize_user_model_in_place_and_output_holding_it(
    tmp_path: Path, model_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "tiny", repo / "tiny")
    argv = ["models", "quantize", "tiny", "--data-dir", str(tmp_path / "d")]
    assert cli.main([*argv, "--model-repository", str(repo)]) == 0
    assert (repo / "tiny" / "2" / "model.int8.onnx").is_file()
    # --output naming the repository that holds the model quantizes it there, without a copy
    assert cli.main([*argv, "--output", str(repo)]) == 0
    assert "copied" not in capsys.readouterr().out


def test_a_user_model_named_like_a_bundled_one_is_quantized_dynamically(
    tmp_path: Path, model_repo: Path
) -> None:
    """The bundled calibration data (an ``image`` input) is for the bundled models only."""
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "tiny", repo / "defects")  # input "x", not "image"
    argv = ["models", "quantize", "defects", "--model-repository", str(repo)]
    assert cli.main([*argv, "--data-dir", str(tmp_path / "d")]) == 0
    assert (repo / "defects" / "1" / "model.int8.onnx").is_file()


def test_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    for action, words in (
        (
            "list",
            ["input and output tensors", "datatype", "shape", "--model-repository DIR", "Triton"],
        ),
        ("quantize", ["--output DIR", "bundled", "--model-repository DIR", "Triton"]),
    ):
        with pytest.raises(SystemExit):
            cli.main(["models", action, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for word in words:
            assert word in text, (action, word)
