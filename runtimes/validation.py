"""Checking a request's tensors against a model's metadata, before anything runs.

The checks are cheap (dictionary lookups and tuple compares, a few microseconds) because they sit on
every inference call. Each failure raises :class:`~runtimes.errors.InvalidInput` with a message
that names the tensor and says what was expected and what was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from runtimes.base import DYNAMIC, ModelMetadata, TensorSpec, numpy_dtype
from runtimes.errors import InvalidInput


class InputValidator:
    """Validates inputs and requested outputs for one model; built once per loaded model.

    ``dim_names`` optionally gives, per input, the symbolic name of each dimension (``None`` for
    a fixed or anonymous one), as onnxruntime reports them; inputs whose dims share a name (say
    the batch axis ``"N"``) must then agree on its size.
    """

    def __init__(
        self,
        metadata: ModelMetadata,
        dim_names: Mapping[str, Sequence[str | None]] | None = None,
    ) -> None:
        self._model = metadata.name
        self._inputs: dict[str, tuple[TensorSpec, np.dtype, tuple[tuple[int, int], ...]]] = {
            spec.name: (spec, numpy_dtype(spec.datatype), _fixed_axes(spec))
            for spec in metadata.inputs
        }
        self._output_names = frozenset(spec.name for spec in metadata.outputs)
        self._all_outputs = tuple(spec.name for spec in metadata.outputs)
        # (input, axis, symbolic name) for every named dynamic dim shared by two or more inputs
        named: dict[str, list[tuple[str, int]]] = {}
        for name, dims in (dim_names or {}).items():
            for axis, dim in enumerate(dims):
                if isinstance(dim, str) and dim:
                    named.setdefault(dim, []).append((name, axis))
        self._shared_dims = [(dim, uses) for dim, uses in sorted(named.items()) if len(uses) > 1]

    def prepare_inputs(self, inputs: Mapping[str, object]) -> dict[str, np.ndarray]:
        """The feed to hand onnxruntime; ``InvalidInput`` unless ``inputs`` fits the model.

        ``inputs`` must hold exactly the model's inputs, each a numpy array of the declared dtype
        and of a shape matching the declared one. BYTES inputs may be str, bytes (UTF-8) or object
        arrays of either; they are handed on as object arrays of str, as onnxruntime wants.
        """
        for name in inputs:
            if name not in self._inputs:
                expected = ", ".join(sorted(self._inputs))
                raise InvalidInput(
                    f"model {self._model!r} has no input {name!r} (inputs: {expected})"
                )
        feed: dict[str, np.ndarray] = {}
        for name, (spec, dtype, fixed) in self._inputs.items():
            if name not in inputs:
                raise InvalidInput(f"model {self._model!r}: missing input {name!r}")
            value = inputs[name]
            if not isinstance(value, np.ndarray):
                raise InvalidInput(
                    f"input {name!r}: expected a numpy array, got {type(value).__name__}"
                )
            if spec.datatype == "BYTES":
                value = _as_strings(spec, value)
            elif value.dtype is not dtype and value.dtype != dtype:
                raise InvalidInput(
                    f"input {name!r}: expected datatype {spec.datatype} ({dtype}), "
                    f"got numpy {value.dtype}"
                )
            shape = value.shape
            if len(shape) != len(spec.shape) or any(shape[a] != n for a, n in fixed):
                _shape_error(spec, shape)
            feed[name] = value
        for dim, uses in self._shared_dims:
            first_input, first_axis = uses[0]
            size = feed[first_input].shape[first_axis]
            for other, axis in uses[1:]:
                if feed[other].shape[axis] != size:
                    raise InvalidInput(
                        f"input {other!r}: axis {axis} (dim {dim!r}) is "
                        f"{feed[other].shape[axis]} but input {first_input!r} has {size} there"
                    )
        return feed

    def check_outputs(self, outputs: Sequence[str] | None) -> tuple[str, ...]:
        """The output names to compute (all for ``None`` or empty); ``InvalidInput`` on unknown."""
        if outputs is None:
            return self._all_outputs
        if isinstance(outputs, str):
            raise InvalidInput("requested outputs must be a sequence of names, not a string")
        names = tuple(outputs)
        if not names:
            return self._all_outputs
        for name in names:
            if name not in self._output_names:
                expected = ", ".join(sorted(self._output_names))
                raise InvalidInput(
                    f"model {self._model!r} has no output {name!r} (outputs: {expected})"
                )
        if len(set(names)) != len(names):
            raise InvalidInput(f"output requested twice in {list(names)}")
        return names


def _as_strings(spec: TensorSpec, value: np.ndarray) -> np.ndarray:
    """A BYTES input as an object array of str (bytes decoded as UTF-8)."""
    kind = value.dtype.kind
    if kind == "U":
        return value
    if kind not in "OS":
        raise InvalidInput(f"input {spec.name!r}: expected datatype BYTES, got numpy {value.dtype}")
    flat = value.ravel()
    out = np.empty(flat.shape, dtype=object)
    for i, item in enumerate(flat):
        if isinstance(item, bytes):
            try:
                out[i] = item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"input {spec.name!r}: element {i} is not valid UTF-8") from None
        elif isinstance(item, str):
            out[i] = item
        else:
            raise InvalidInput(
                f"input {spec.name!r}: element {i} is {type(item).__name__}, not str or bytes"
            )
    return out.reshape(value.shape)


def _fixed_axes(spec: TensorSpec) -> tuple[tuple[int, int], ...]:
    return tuple((axis, size) for axis, size in enumerate(spec.shape) if size != DYNAMIC)


def _shape_error(spec: TensorSpec, shape: tuple[int, ...]) -> None:
    """Raise ``InvalidInput`` saying how ``shape`` differs from the spec's."""
    expected = spec.shape
    if len(shape) != len(expected):
        raise InvalidInput(
            f"input {spec.name!r}: expected shape {format_shape(expected)} "
            f"(rank {len(expected)}), got {list(shape)} (rank {len(shape)})"
        )
    for axis, (want, got) in enumerate(zip(expected, shape, strict=True)):
        if want != DYNAMIC and want != got:
            raise InvalidInput(
                f"input {spec.name!r}: expected shape {format_shape(expected)}, got "
                f"{list(shape)} (axis {axis} must be {want})"
            )


def format_shape(shape: tuple[int, ...]) -> str:
    """A shape as a v2 client reads it: ``[-1, 1, 32, 32]``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"
