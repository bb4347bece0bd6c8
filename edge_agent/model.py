"""Run the bundle's LSTM one reading at a time, with each stream's own recurrent state.

The exported model is the fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op with a batch of one and a
sequence of one. Its h and c inputs are *variable tensors*: they persist across ``invoke()``, and
``get_tensor``/``set_tensor`` work on them. So one interpreter serves every stream: before a
step the stream's state is written into the variable tensors, after it the new state is read
back. The state lives in plain numpy arrays, which is also what persistence snapshots.

Runtimes: ``ai-edge-litert`` (preferred; bit-identical to TensorFlow's interpreter) or
``tflite-runtime`` (fallback, needs numpy<2). ``EDGE_AGENT_RUNTIME=litert|tflite`` forces one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .bundle import ModelFile, TensorSpec
from .errors import BundleError

State = list[np.ndarray]


@dataclass(frozen=True)
class Runtime:
    """The interpreter class in use and where it came from (printed at start-up)."""

    name: str
    version: str
    interpreter_class: Any

    def describe(self) -> str:
        return f"{self.name} {self.version}"


def load_runtime(preference: str | None = None) -> Runtime:
    """The LiteRT runtime: ``litert`` (ai-edge-litert) first, then ``tflite`` (tflite-runtime).

    ``preference`` (or the ``EDGE_AGENT_RUNTIME`` environment variable) restricts the choice.
    """
    choice = (preference or os.environ.get("EDGE_AGENT_RUNTIME") or "auto").lower()
    if choice not in {"auto", "litert", "tflite"}:
        raise BundleError(f"unknown runtime {choice!r}: expected auto, litert or tflite")
    errors = []
    if choice in {"auto", "litert"}:
        try:
            from ai_edge_litert import interpreter as litert

            version = _package_version("ai-edge-litert")
            return Runtime("ai-edge-litert", version, litert.Interpreter)
        except ImportError as exc:
            errors.append(f"ai-edge-litert: {exc}")
    if choice in {"auto", "tflite"}:
        try:
            from tflite_runtime import interpreter as tflite  # type: ignore[import-not-found]

            version = _package_version("tflite-runtime")
            return Runtime("tflite-runtime", version, tflite.Interpreter)
        except ImportError as exc:
            errors.append(f"tflite-runtime: {exc}")
    raise BundleError("no TFLite runtime is installed (" + "; ".join(errors) + "); install the "
                      "agent with `pip install '.[agent]'` (ai-edge-litert) or '.[tflite]'")


def _package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def check_quantisation(interp: Any, path: str | Path) -> None:
    """Refuse a model whose quantisation scales are degenerate, before the runtime allocates it.

    A converter calibrated on a range of zero writes scales below float32's smallest normal
    number; allocating such a model crashes the whole process (a segfault, not an exception),
    so it is caught here, where it can still be reported as a bundle error.
    """
    tiny = float(np.finfo(np.float32).tiny)
    for detail in interp.get_tensor_details():
        scales = np.asarray(detail["quantization_parameters"]["scales"], dtype=np.float64)
        if scales.size and not np.all(np.isfinite(scales) & (scales >= tiny)):
            raise BundleError(
                f"{path}: tensor {detail['index']} ({detail['name']}) has quantisation scale "
                f"{scales.min():g}: the model was calibrated on a range of zero (a flat "
                "training history?); retrain it with this version of edge-trainer")


class StatefulModel:
    """One interpreter, many streams: ``step(x, state)`` advances one stream by one reading.

    ``x`` is the normalised reading (float32, one value per feature); the result is the
    normalised forecast of the next reading. ``state`` is updated in place.
    """

    def __init__(self, path: str | Path, spec: ModelFile, runtime: Runtime | None = None) -> None:
        self.path = Path(path)
        self.spec = spec
        self.runtime = runtime or load_runtime()
        try:
            self._interp = self.runtime.interpreter_class(model_path=str(self.path),
                                                          num_threads=1)
            check_quantisation(self._interp, self.path)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{self.path}: the runtime cannot load this model: {exc}") from None
        self._check_tensors()
        self._in = spec.input.index
        self._out = spec.output.index
        self._state_idx = [s.index for s in spec.state]
        self._in_shape = tuple(spec.input.shape)
        self._zero = [np.asarray(s.zero, dtype=s.dtype).reshape(s.shape) for s in spec.state]
        self._check_zero_state()

    # -- validation against the manifest -------------------------------------------------
    def _check_tensors(self) -> None:
        details = {d["index"]: d for d in self._interp.get_tensor_details()}
        tensors: Sequence[tuple[str, TensorSpec]] = (
            [("input", self.spec.input), ("output", self.spec.output)]
            + [(f"state {s.name}", s) for s in self.spec.state])
        for role, tensor in tensors:
            found = details.get(tensor.index)
            if found is None:
                raise BundleError(f"{self.path}: has no tensor {tensor.index} ({role} in the "
                                  "manifest); manifest and model do not belong together")
            shape = [int(d) for d in found["shape"]]
            dtype = np.dtype(found["dtype"]).name
            scale, zero_point = found["quantization"]
            if shape != tensor.shape or dtype != tensor.dtype or (
                    tensor.dtype != "float32" and (not np.isclose(scale, tensor.scale)
                                                   or zero_point != tensor.zero_point)):
                raise BundleError(
                    f"{self.path}: tensor {tensor.index} ({role}) is {dtype} {shape} "
                    f"q=({scale:g}, {zero_point}), the manifest says {tensor.dtype} "
                    f"{tensor.shape} q=({tensor.scale:g}, {tensor.zero_point})")

    def _check_zero_state(self) -> None:
        self._interp.reset_all_variables()
        for tensor, zero in zip(self.spec.state, self._zero):
            if not np.array_equal(self._interp.get_tensor(tensor.index), zero):
                raise BundleError(f"{self.path}: the reset value of state tensor {tensor.name!r} "
                                  "differs from the manifest's zero state")

    # -- stepping ----------------------------------------------------------------------------
    def zero_state(self) -> State:
        """A fresh state for a new or reset stream (a copy the caller owns)."""
        return [z.copy() for z in self._zero]

    def step(self, x: Sequence[float], state: State) -> list[float]:
        """Advance ``state`` by one normalised reading; return the forecast of the next one
        (one float per feature)."""
        interp = self._interp
        set_tensor, get_tensor = interp.set_tensor, interp.get_tensor
        for index, value in zip(self._state_idx, state):
            set_tensor(index, value)
        set_tensor(self._in, np.array(x, dtype=np.float32).reshape(self._in_shape))
        interp.invoke()
        for i, index in enumerate(self._state_idx):
            state[i] = get_tensor(index)
        return get_tensor(self._out).reshape(-1).tolist()

    def run(self, xs: np.ndarray, state: State | None = None) -> np.ndarray:
        """Forecasts for a whole normalised sequence, stepped one reading at a time."""
        state = self.zero_state() if state is None else state
        out = np.empty((len(xs), self.spec.output.shape[-1]), dtype=np.float32)
        for i, x in enumerate(np.asarray(xs)):
            out[i] = self.step(x, state)
        return out
