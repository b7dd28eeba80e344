"""Repository roots that cannot be used are reported (warning, problem), never skipped silently."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from moltmesh.config import ConfigError, load_config
from runtimes.errors import InvalidModel, RepositoryRootProblem
from runtimes.repository import ModelRepository
from tests.runtimes.conftest import ModelFiles


def _put(src: Path, root: Path, model: str) -> None:
    dst = root / model / "1" / "model.onnx"
    dst.parent.mkdir(parents=True)
    shutil.copyfile(src, dst)


def test_missing_root_is_a_problem_logged_as_warning(
    tmp_path: Path, model_files: ModelFiles, caplog: pytest.LogCaptureFixture
) -> None:
    good, missing = tmp_path / "good", tmp_path / "srv" / "models"
    _put(model_files.two, good, "adder")
    repo = ModelRepository([missing, good])
    with caplog.at_level(logging.WARNING, logger="runtimes.repository"):
        scan = repo.scan()
    assert list(scan.entries) == ["adder"]  # the other roots stay usable
    (problem,) = scan.problems
    assert isinstance(problem, RepositoryRootProblem) and isinstance(problem, InvalidModel)
    assert problem.path == missing
    assert (
        str(problem) == f"model repository root {missing}: does not exist, no models read from it"
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [str(problem)]


def test_root_that_is_a_file_is_a_problem(tmp_path: Path) -> None:
    root = tmp_path / "models.tar"
    root.write_bytes(b"not a directory")
    (problem,) = ModelRepository([root]).problems()
    assert "is not a directory" in str(problem) and str(root) in str(problem)


def test_root_removed_after_start_is_reported(tmp_path: Path, model_files: ModelFiles) -> None:
    root = tmp_path / "repo"
    _put(model_files.two, root, "adder")
    repo = ModelRepository([root])
    assert repo.problems() == []
    shutil.rmtree(root)
    assert [p.path for p in repo.problems()] == [root]
    assert repo.index() == []


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_config_refuses_a_user_root_that_is_not_a_directory(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "srv-models"
    if kind == "file":
        root.write_text("x")
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"runtime.model_repository": [root]})
    reason = "does not exist" if kind == "missing" else "is not a directory"
    assert str(info.value) == (
        f"runtime.model_repository: {root} {reason} (from flag for runtime.model_repository)"
    )


def test_config_accepts_existing_roots(tmp_path: Path) -> None:
    config = load_config(env={"MOLTMESH_RUNTIME_MODEL_REPOSITORY": str(tmp_path)})
    assert config.runtime.model_repository == [tmp_path]
