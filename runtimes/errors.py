"""Typed errors of the runtimes layer.

Every error a caller of ``runtimes`` should handle derives from :class:`RuntimeErrorBase`, so the
node can map the whole family to HTTP statuses in one place:

=========================  ===========================================================
error                      meaning (suggested HTTP status)
=========================  ===========================================================
``ModelNotFound``          no model of that name in any repository root (404)
``VersionNotFound``        the model exists, that version does not (404)
``VariantNotAvailable``    the version exists, that variant cannot be had (404 / 409)
``InvalidModel``           a model directory or file is malformed (500 / reported)
``RepositoryRootProblem``  (an ``InvalidModel``) a repository root is missing (reported)
``InvalidInput``           a request's tensors do not match the model's metadata (400)
``RunFailed``              onnxruntime failed on valid-looking inputs (500)
``RuntimeClosed``          ``run`` was called after ``close`` (503)
=========================  ===========================================================

The messages are meant to be shown to a client as they are: they name the model, tensor or file
concerned and never contain a traceback.
"""

from __future__ import annotations

from pathlib import Path


class RuntimeErrorBase(Exception):
    """Base of every error raised on purpose by ``runtimes``."""


class ModelNotFound(RuntimeErrorBase):
    """No repository root holds a model called ``model``."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(f"model {model!r} not found")


class VersionNotFound(RuntimeErrorBase):
    """The model ``model`` exists but has no version ``version``."""

    def __init__(self, model: str, version: str) -> None:
        self.model = model
        self.version = version
        super().__init__(f"model {model!r} has no version {version!r}")


class InvalidModel(RuntimeErrorBase):
    """The model file or directory at ``path`` cannot be used, for ``reason``."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"invalid model at {self.path}: {reason}")


class RepositoryRootProblem(InvalidModel):
    """The repository root ``path`` is missing, not a directory or unreadable: nothing read there.

    An ``InvalidModel`` so it is listed with the other problems of a scan; its message names the
    root rather than a model.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(path, reason)
        self.args = (f"model repository root {self.path}: {reason}",)


class InvalidInput(RuntimeErrorBase):
    """The inputs given to ``Runtime.run`` do not match the model; the message says how."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class VariantNotAvailable(RuntimeErrorBase):
    """Variant ``variant`` (``"full"``, ``"int8"``, ``"fp16"``) cannot be had, for ``reason``."""

    def __init__(self, variant: str, reason: str) -> None:
        self.variant = variant
        self.reason = reason
        super().__init__(f"variant {variant!r} not available: {reason}")


class RuntimeClosed(RuntimeErrorBase):
    """``run`` was called on a runtime that has been closed."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(f"runtime for model {model!r} is closed")


class RunFailed(RuntimeErrorBase):
    """onnxruntime failed on inputs that passed validation, for a reason other than the inputs."""

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        super().__init__(f"model {model!r} failed to run: {reason}")
