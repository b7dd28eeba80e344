"""A model repository on disk in Triton's layout, over one or more roots.

Layout (the same as Triton's, so users can drop in their own ONNX models)::

    <root>/<model>/model.toml            optional: description, [cascade] escalate_to, threshold
    <root>/<model>/labels.txt            optional: one class name per line, line i = class i
    <root>/<model>/<version>/model.onnx        variant "full" (fp32)
    <root>/<model>/<version>/model.int8.onnx   variant "int8"
    <root>/<model>/<version>/model.fp16.onnx   variant "fp16"

``<version>`` is a decimal number; the latest is the largest. Rules:

- Roots are searched in order and an earlier root wins on a name clash (the user's repository is
  given before the bundled one). The earlier root keeps the name even when its directory there
  is malformed, so a broken user model is reported rather than silently replaced.
- A malformed directory (bad ``model.toml``, unreadable ``labels.txt``, no version holding a model
  file, a name unusable in a URL) never makes scanning fail: it is reported as an
  :class:`InvalidModel` in :meth:`ModelRepository.problems` and left out of the index; loading it
  raises that error. A version directory without any model file is reported and skipped, the
  model's other versions stay usable. A root that is missing, not a directory or unreadable is
  reported as a :class:`~runtimes.errors.RepositoryRootProblem` (logged as a warning naming
  the path) and skipped, so the other roots stay usable; hidden entries are ignored.
- The disk is scanned afresh on every call, so models dropped in are seen without a restart.
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runtimes.base import VARIANT_FP16, VARIANT_FULL, VARIANT_INT8, VARIANTS, CascadeConfig
from runtimes.errors import (
    InvalidModel,
    ModelNotFound,
    RepositoryRootProblem,
    VariantNotAvailable,
    VersionNotFound,
)

if TYPE_CHECKING:  # onnxruntime is imported only when a model is loaded
    from runtimes.onnx import OnnxOptions, OnnxRuntime

log = logging.getLogger(__name__)

VARIANT_FILES: dict[str, str] = {
    VARIANT_FULL: "model.onnx",
    VARIANT_INT8: "model.int8.onnx",
    VARIANT_FP16: "model.fp16.onnx",
}
"""The file name of each variant inside a version directory."""

CONFIG_FILE = "model.toml"
LABELS_FILE = "labels.txt"

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION = re.compile(r"^[0-9]+$")


def variant_filename(variant: str) -> str:
    """The file name of ``variant``; ``VariantNotAvailable`` for an unknown variant name."""
    try:
        return VARIANT_FILES[variant]
    except KeyError:
        known = ", ".join(VARIANTS)
        raise VariantNotAvailable(variant, f"unknown variant (known: {known})") from None


@dataclass(frozen=True)
class ModelEntry:
    """One usable model found in a repository.

    ``versions`` are ascending by number; ``variants`` maps each version to the variants present
    there (in the order of :data:`~runtimes.base.VARIANTS`); ``path`` is the model directory.
    """

    name: str
    versions: tuple[str, ...]
    variants: dict[str, tuple[str, ...]]
    path: Path
    description: str = ""
    cascade: CascadeConfig | None = None
    labels: tuple[str, ...] | None = None

    @property
    def latest(self) -> str:
        """The highest version."""
        return self.versions[-1]

    def file(self, version: str, variant: str) -> Path:
        """Path of ``variant`` of ``version`` (which may not exist)."""
        return self.path / version / variant_filename(variant)


@dataclass(frozen=True)
class RepositoryScan:
    """The result of one scan: usable ``entries`` by name, and every problem found.

    ``invalid`` maps a model name claimed by a malformed directory to its error; ``problems``
    lists those errors plus version directories that were skipped.
    """

    entries: dict[str, ModelEntry] = field(default_factory=dict)
    invalid: dict[str, InvalidModel] = field(default_factory=dict)
    problems: list[InvalidModel] = field(default_factory=list)


class ModelRepository:
    """Models found under ``roots`` (earlier roots first); the module docstring has the rules."""

    def __init__(self, roots: Sequence[Path | str]) -> None:
        if isinstance(roots, str | Path):
            raise TypeError("roots must be a sequence of paths, not a single path")
        self.roots: tuple[Path, ...] = tuple(Path(r) for r in roots)

    def scan(self) -> RepositoryScan:
        """Scan every root now; never raises for malformed content."""
        result = RepositoryScan()
        for root in self.roots:
            try:
                children = _list_root(root)
            except RepositoryRootProblem as problem:
                log.warning("%s", problem)
                result.problems.append(problem)
                continue
            for model_dir in children:
                name = model_dir.name
                if name.startswith((".", "_")) or not model_dir.is_dir():
                    continue
                if name in result.entries or name in result.invalid:
                    log.info("model %s in %s is shadowed by an earlier root", name, root)
                    continue
                try:
                    try:
                        result.entries[name] = _read_model_dir(model_dir, result.problems)
                    except OSError as exc:
                        raise InvalidModel(model_dir, f"cannot read it: {exc}") from None
                except InvalidModel as exc:
                    log.warning("%s", exc)
                    result.invalid[name] = exc
                    result.problems.append(exc)
        return result

    def index(self) -> list[ModelEntry]:
        """Every usable model, sorted by name."""
        entries = self.scan().entries
        return [entries[name] for name in sorted(entries)]

    def problems(self) -> list[InvalidModel]:
        """Every unusable root and malformed model or version directory found by a fresh scan."""
        return self.scan().problems

    def entry(self, name: str) -> ModelEntry:
        """The model ``name``; ``ModelNotFound``, or ``InvalidModel`` when its directory is bad."""
        scan = self.scan()
        if name in scan.invalid:
            raise scan.invalid[name]
        try:
            return scan.entries[name]
        except KeyError:
            raise ModelNotFound(name) from None

    def resolve(
        self, name: str, version: str | int | None = None, variant: str = VARIANT_FULL
    ) -> tuple[ModelEntry, str, Path]:
        """The entry, version and file that :meth:`load` would use, without loading anything.

        Raises ``ModelNotFound``, ``InvalidModel``, ``VersionNotFound`` or ``VariantNotAvailable``.
        """
        filename = variant_filename(variant)
        entry = self.entry(name)
        chosen = entry.latest if version is None else str(version)
        if chosen not in entry.variants:
            raise VersionNotFound(name, chosen)
        if variant not in entry.variants[chosen]:
            present = ", ".join(entry.variants[chosen])
            raise VariantNotAvailable(
                variant,
                f"model {name!r} version {chosen} has no {filename} (present: {present}); "
                "`moltmesh models quantize` makes the int8 and fp16 variants",
            )
        return entry, chosen, entry.path / chosen / filename

    def load(
        self,
        name: str,
        version: str | int | None = None,
        variant: str = VARIANT_FULL,
        options: OnnxOptions | None = None,
    ) -> OnnxRuntime:
        """Load ``variant`` of ``version`` (default: the latest) of model ``name``.

        The runtime's metadata carries the model's labels, description and cascade settings.
        Raises what :meth:`resolve` raises, and ``InvalidModel`` when onnxruntime cannot load it.
        """
        from runtimes.onnx import OnnxRuntime

        entry, chosen, path = self.resolve(name, version, variant)
        return OnnxRuntime(
            path,
            name=name,
            version=chosen,
            variant=variant,
            options=options,
            labels=entry.labels,
            description=entry.description,
            cascade=entry.cascade,
        )


def _list_root(root: Path) -> list[Path]:
    """The entries of ``root`` by name; ``RepositoryRootProblem`` when it cannot be used."""
    try:
        if not root.is_dir():
            reason = "is not a directory" if root.exists() else "does not exist"
            raise RepositoryRootProblem(root, f"{reason}, no models read from it")
        return sorted(root.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise RepositoryRootProblem(root, f"cannot list it: {exc}") from None


def _read_model_dir(model_dir: Path, problems: list[InvalidModel]) -> ModelEntry:
    """Read one model directory; raises ``InvalidModel``, appends skipped versions to problems."""
    if not _MODEL_NAME.match(model_dir.name):
        raise InvalidModel(
            model_dir, "model name must be letters, digits, '_', '.' or '-' (no leading symbol)"
        )
    description, cascade = _read_config(model_dir / CONFIG_FILE)
    labels = _read_labels(model_dir / LABELS_FILE)
    variants: dict[str, tuple[str, ...]] = {}
    for version_dir in model_dir.iterdir():
        if not version_dir.is_dir() or not _VERSION.match(version_dir.name):
            continue
        present = tuple(v for v in VARIANTS if (version_dir / VARIANT_FILES[v]).is_file())
        if not present:
            problem = InvalidModel(
                version_dir, f"no model file ({', '.join(VARIANT_FILES.values())})"
            )
            log.warning("%s", problem)
            problems.append(problem)
            continue
        variants[version_dir.name] = present
    if not variants:
        raise InvalidModel(model_dir, "no numeric version directory holding a model.onnx")
    versions = tuple(sorted(variants, key=int))
    return ModelEntry(
        name=model_dir.name,
        versions=versions,
        variants={v: variants[v] for v in versions},
        path=model_dir,
        description=description,
        cascade=cascade,
        labels=labels,
    )


def _read_config(path: Path) -> tuple[str, CascadeConfig | None]:
    """``(description, cascade)`` from a ``model.toml``; defaults when the file is absent."""
    if not path.is_file():
        return "", None
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidModel(path, f"cannot read it: {exc}") from None
    description = data.get("description", "")
    if not isinstance(description, str):
        raise InvalidModel(path, "'description' must be a string")
    table = data.get("cascade")
    if table is None:
        return description, None
    if not isinstance(table, dict):
        raise InvalidModel(path, "'cascade' must be a table")
    target = table.get("escalate_to")
    threshold = table.get("confidence_threshold")
    if not isinstance(target, str) or not target:
        raise InvalidModel(path, "[cascade] escalate_to must be a model name")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
        or not 0.0 <= threshold <= 1.0
    ):
        raise InvalidModel(path, "[cascade] confidence_threshold must be a number in [0, 1]")
    return description, CascadeConfig(escalate_to=target, confidence_threshold=float(threshold))


def _read_labels(path: Path) -> tuple[str, ...] | None:
    """Class names from ``labels.txt`` (trailing blank lines dropped), ``None`` when absent."""
    if not path.is_file():
        return None
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidModel(path, f"cannot read it: {exc}") from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise InvalidModel(path, "labels file is empty")
    return tuple(lines)
