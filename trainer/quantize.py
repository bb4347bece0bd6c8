"""Export the trained network as one-step streaming TFLite models: full-integer int8 and float32.

The trained weights are copied into a twin built with a fixed batch of one and a sequence of
one. Legacy Keras converts it to the fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op whose h and c
are variable tensors: on the device they persist across ``invoke()`` and can be swapped per
stream. Full-integer quantisation gives int8 weights and activations, h in int8 and c in int16;
input and output stay float32, so the agent feeds and reads plain floats.

The int8 ranges are calibrated on consecutive real timesteps of the training sequences (not
shuffled samples): the variable state tensors carry over between samples during calibration,
so h and c see the values they will really take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from edge_agent.bundle import ModelFile, StateTensor, TensorSpec
from edge_agent.model import check_quantisation

from .model import build
from .tfenv import tensorflow

LSTM_OP = "UNIDIRECTIONAL_SEQUENCE_LSTM"
H_INPUT, C_INPUT = 18, 19  # the op's variable-state inputs (TFLite's LSTM input layout)


@dataclass
class Exported:
    int8: bytes
    float32: bytes


def streaming_twin(trained: Any, n_features: int, layers: Sequence[int],
                   residual: bool = True) -> Any:
    """The trained network rebuilt for one reading at a time (batch 1, sequence 1)."""
    twin = build(n_features, layers, batch=1, steps=1, residual=residual, change_only=residual)
    twin.set_weights(trained.get_weights())
    return twin


PROBE_SPAN = 1.0  # normalised units (training std): a narrower calibration range is "flat"
PROBE_STEPS = 16


def representative(sequences: Sequence[np.ndarray], readings: int) -> Iterator[list[np.ndarray]]:
    """Consecutive real timesteps, an equal share from the start of every sequence, then a
    probe for any feature the real timesteps leave (nearly) constant.

    A flat training history (a sensor that never moved) gives the calibration a range of zero:
    the converter then writes scales near 1e-41 and the runtime crashes loading the model. The
    probe ramps each such feature from -1 to +1 std and back, so its input, and the h and c it
    drives, get ranges a real deviation can be told apart in.
    """
    share = max(1, readings // max(1, len(sequences)))
    rows = [row for seq in sequences for row in seq[:share]]
    yield from ([row.reshape(1, 1, -1).astype(np.float32)] for row in rows)
    for row in probe(np.asarray(rows, dtype=np.float32)):
        yield [row.reshape(1, 1, -1)]


def probe(rows: np.ndarray) -> np.ndarray:
    """Readings that ramp every feature whose calibration range is narrower than PROBE_SPAN
    from -PROBE_SPAN to +PROBE_SPAN and back (the other features held at 0, their training
    mean); none when no feature needs it, so ordinary data is calibrated on real rows only.

    >>> probe(np.array([[0.0, -3.0], [0.1, 3.0]])).shape   # feature 0 is (nearly) flat
    (32, 2)
    >>> float(probe(np.array([[0.0, -3.0], [0.1, 3.0]]))[:, 1].max())
    0.0
    >>> probe(np.array([[-0.2], [1.5]])).shape
    (0, 1)
    """
    narrow = np.ptp(rows, axis=0) < PROBE_SPAN
    ramp = np.linspace(-PROBE_SPAN, PROBE_SPAN, PROBE_STEPS, dtype=np.float32)
    sweep = np.concatenate([ramp, ramp[::-1]]) if narrow.any() else ramp[:0]
    return (sweep[:, None] * narrow[None, :]).astype(np.float32)


def export(twin: Any, sequences: Sequence[np.ndarray], readings: int) -> Exported:
    tf, _ = tensorflow()
    float_model = tf.lite.TFLiteConverter.from_keras_model(twin).convert()
    converter = tf.lite.TFLiteConverter.from_keras_model(twin)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: representative(sequences, readings)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    return Exported(int8=converter.convert(), float32=float_model)


def _tensor(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero_point = detail["quantization"]
    return dict(name=str(detail["name"]), index=int(detail["index"]),
                shape=[int(d) for d in detail["shape"]],
                dtype=np.dtype(detail["dtype"]).name, scale=float(scale),
                zero_point=int(zero_point))


def describe(path: str, sha256: str, size: int, kind: str) -> ModelFile:
    """Read input, output and state tensors (with their zero state) off a converted model."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=1)
    check_quantisation(interp, path)
    interp.allocate_tensors()
    interp.reset_all_variables()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{path}: expected one input and one output tensor")
    lstm_ops = [op for op in interp._get_ops_details() if op["op_name"] == LSTM_OP]
    if not lstm_ops:
        raise ValueError(f"{path}: no {LSTM_OP} op; the export route did not produce the fused "
                         "LSTM (is TF_USE_LEGACY_KERAS=1 and tf-keras installed?)")
    state = []
    for layer, op in enumerate(lstm_ops):
        for role, slot in (("h", H_INPUT), ("c", C_INPUT)):
            detail = details[int(op["inputs"][slot])]
            zero = interp.get_tensor(detail["index"]).astype(np.float64).ravel().tolist()
            spec = _tensor(detail)
            spec["name"] = f"lstm{layer}/{role}"
            state.append(StateTensor(role=role, layer=layer, zero=zero, **spec))
    return ModelFile(file=os.path.basename(path), sha256=sha256, size_bytes=size, kind=kind,
                     input=TensorSpec(**_tensor(inputs[0])),
                     output=TensorSpec(**_tensor(outputs[0])), state=state)
