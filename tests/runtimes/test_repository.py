"""ModelRepository: Triton layout scanning, config and labels, malformed dirs, root precedence."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runtimes.base import CascadeConfig
from runtimes.errors import InvalidModel, ModelNotFound, VariantNotAvailable, VersionNotFound
from runtimes.onnx import OnnxOptions
from runtimes.repository import ModelRepository
from tests.runtimes.conftest import ModelFiles

FAST = OnnxOptions(warmup_runs=1)


def _put(src: Path, root: Path, model: str, version: str, filename: str = "model.onnx") -> Path:
    dst = root / model / version / filename
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


@pytest.fixture
def repo_root(tmp_path: Path, model_files: ModelFiles) -> Path:
    """classifier (versions 1, 2, 10; v10 with int8) with config and labels; adder (v1)."""
    root = tmp_path / "repo"
    for version in ("1", "2", "10"):
        _put(model_files.matmul_softmax, root, "classifier", version)
    _put(model_files.matmul_softmax, root, "classifier", "10", "model.int8.onnx")
    _put(model_files.two, root, "adder", "1")
    (root / "classifier" / "labels.txt").write_text("ok\nscratch\nspot\ncrack\n\n")
    (root / "classifier" / "model.toml").write_text(
        'description = "a test classifier"\n\n'
        '[cascade]\nescalate_to = "adder"\nconfidence_threshold = 0.75\n'
    )
    (root / "README.txt").write_text("not a model")
    (root / ".hidden").mkdir()
    return root


def test_index_lists_models_sorted_with_numeric_versions(repo_root: Path) -> None:
    entries = ModelRepository([repo_root]).index()
    assert [e.name for e in entries] == ["adder", "classifier"]
    adder, classifier = entries
    assert classifier.versions == ("1", "2", "10")
    assert classifier.latest == "10"
    assert classifier.variants == {"1": ("full",), "2": ("full",), "10": ("full", "int8")}
    assert classifier.path == repo_root / "classifier"
    assert classifier.labels == ("ok", "scratch", "spot", "crack")
    assert classifier.description == "a test classifier"
    assert classifier.cascade == CascadeConfig("adder", 0.75)
    assert adder.labels is None and adder.cascade is None and adder.description == ""


def test_load_latest_and_specific_versions_and_variants(repo_root: Path) -> None:
    repo = ModelRepository([repo_root])
    latest = repo.load("classifier", options=FAST)
    meta = latest.metadata
    assert (meta.name, meta.version, meta.variant) == ("classifier", "10", "full")
    assert meta.labels == ("ok", "scratch", "spot", "crack")
    assert meta.cascade == CascadeConfig("adder", 0.75)
    assert meta.description == "a test classifier"
    assert repo.load("classifier", 2, options=FAST).metadata.version == "2"
    assert repo.load("classifier", "10", "int8", FAST).metadata.variant == "int8"


def test_load_errors_name_what_is_missing(repo_root: Path) -> None:
    repo = ModelRepository([repo_root])
    with pytest.raises(ModelNotFound, match="nope"):
        repo.load("nope")
    with pytest.raises(VersionNotFound, match="'3'"):
        repo.load("classifier", "3")
    with pytest.raises(VariantNotAvailable, match=r"model\.int8\.onnx"):
        repo.load("classifier", "1", "int8")
    with pytest.raises(VariantNotAvailable, match="unknown variant"):
        repo.load("classifier", variant="int4")


def test_models_dropped_in_are_seen_without_restart(
    repo_root: Path, model_files: ModelFiles
) -> None:
    repo = ModelRepository([repo_root])
    assert "late" not in [e.name for e in repo.index()]
    _put(model_files.fixed, repo_root, "late", "1")
    assert "late" in [e.name for e in repo.index()]


@pytest.mark.parametrize(
    ("name", "setup", "reason"),
    [
        ("badtoml", lambda d: (d / "model.toml").write_text("description = [unclosed"),
         "cannot read"),
        ("badthreshold", lambda d: (d / "model.toml").write_text(
            '[cascade]\nescalate_to = "x"\nconfidence_threshold = 1.5\n'), "confidence_threshold"),
        ("badtarget", lambda d: (d / "model.toml").write_text(
            "[cascade]\nconfidence_threshold = 0.5\n"), "escalate_to"),
        ("baddescription", lambda d: (d / "model.toml").write_text("description = 3\n"),
         "description"),
        ("badlabels", lambda d: (d / "labels.txt").write_bytes(b"\xff\xfe\xfa"), "cannot read"),
        ("emptylabels", lambda d: (d / "labels.txt").write_text("\n\n"), "empty"),
        ("noversions", lambda d: shutil.rmtree(d / "1"), "no numeric version"),
        ("onlyjunk", lambda d: (d / "1" / "model.onnx").rename(d / "1" / "other.onnx"),
         "no numeric version"),
        ("bad name!", lambda d: None, "model name"),
    ],
)  # fmt: skip
def test_malformed_dirs_are_reported_not_crashed_on(
    tmp_path: Path, model_files: ModelFiles, name: str, setup: object, reason: str
) -> None:
    root = tmp_path / "repo"
    _put(model_files.fixed, root, "good", "1")
    _put(model_files.fixed, root, name, "1")
    setup(root / name)  # type: ignore[operator]
    repo = ModelRepository([root])
    assert [e.name for e in repo.index()] == ["good"]
    problems = repo.problems()
    assert problems and all(isinstance(p, InvalidModel) for p in problems)
    assert any(reason in p.reason for p in problems), problems
    with pytest.raises(InvalidModel, match=reason):
        repo.load(name)


def test_version_without_model_file_is_skipped_and_reported(
    repo_root: Path, model_files: ModelFiles
) -> None:
    (repo_root / "classifier" / "11").mkdir()
    (repo_root / "classifier" / "notaversion").mkdir()
    repo = ModelRepository([repo_root])
    assert repo.entry("classifier").versions == ("1", "2", "10")
    [problem] = repo.problems()
    assert problem.path == repo_root / "classifier" / "11"


def test_unloadable_onnx_file_raises_invalid_model_on_load(
    tmp_path: Path, model_files: ModelFiles
) -> None:
    _put(model_files.broken, tmp_path, "broken", "1")
    repo = ModelRepository([tmp_path])
    assert [e.name for e in repo.index()] == ["broken"]  # scanning does not open model files
    with pytest.raises(InvalidModel, match="cannot load"):
        repo.load("broken")


def test_earlier_root_wins_on_name_clash(tmp_path: Path, model_files: ModelFiles) -> None:
    user, bundled = tmp_path / "user", tmp_path / "bundled"
    _put(model_files.two, user, "shared", "1")
    _put(model_files.matmul_softmax, bundled, "shared", "1")
    _put(model_files.matmul_softmax, bundled, "shared", "2")
    _put(model_files.fixed, bundled, "only-bundled", "1")
    repo = ModelRepository([user, tmp_path / "missing-root", bundled])
    entries = {e.name: e for e in repo.index()}
    assert sorted(entries) == ["only-bundled", "shared"]
    assert entries["shared"].path == user / "shared"
    assert entries["shared"].versions == ("1",)
    assert [s.name for s in repo.load("shared", options=FAST).metadata.inputs] == ["a", "b"]


def test_malformed_user_model_shadows_bundled_and_is_reported(
    tmp_path: Path, model_files: ModelFiles
) -> None:
    user, bundled = tmp_path / "user", tmp_path / "bundled"
    (user / "shared" / "1").mkdir(parents=True)  # no model file: malformed
    _put(model_files.matmul_softmax, bundled, "shared", "1")
    repo = ModelRepository([user, bundled])
    assert repo.index() == []
    with pytest.raises(InvalidModel):
        repo.entry("shared")


def test_roots_must_be_a_sequence(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        ModelRepository(tmp_path)  # type: ignore[arg-type]


def test_unreadable_dirs_are_reported(
    tmp_path: Path, model_files: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Directories that cannot be listed (permissions, I/O errors) become problems, not crashes."""
    good, locked, locked_root = tmp_path / "ok", tmp_path / "ok" / "locked", tmp_path / "locked"
    _put(model_files.fixed, good, "fine", "1")
    _put(model_files.fixed, good, "locked", "1")
    locked_root.mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self: Path):  # type: ignore[no-untyped-def]
        if self in (locked, locked_root):
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    repo = ModelRepository([locked_root, good])
    assert [e.name for e in repo.index()] == ["fine"]
    assert sorted(str(p.path) for p in repo.problems()) == sorted([str(locked_root), str(locked)])
    with pytest.raises(InvalidModel, match="Permission denied"):
        repo.load("locked")
