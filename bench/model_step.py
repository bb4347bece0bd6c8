"""Benchmark one model step of a bundle: int8 vs float TFLite vs the Keras network it came from.

For a bundle (default: the shipped demo bundle) this prints one table with, per model:

* the file size in bytes;
* the latency of one step (median and p90 over ``--steps`` repetitions, after a warm-up):
  the agent's own runtime call ``StatefulModel.step(x, state)`` (it writes the stream's state
  into the interpreter, invokes, reads the new state back), a bare ``interpreter.invoke()``,
  and for Keras ``model.predict(x)`` and ``model(x)`` on the one-step network;
* the one-step forecast error (mean absolute error in normalised units) on held-out simulated
  joints, each model run statefully from its zero state over whole sequences, and how far the
  int8 forecasts are from the float ones.

The Keras network is rebuilt with ``trainer.model.build`` from ``keras_weights.npz`` and the
manifest's architecture, so this needs the trainer extra (TensorFlow, tf-keras).

Run from the repository root::

    python bench/model_step.py [--bundle PATH] [--steps N] [--markdown]
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_agent.bundle import Bundle, ModelFile, load_bundle  # noqa: E402
from edge_agent.model import StatefulModel, load_runtime  # noqa: E402
from edge_agent.normalise import Normaliser  # noqa: E402
from edge_agent.simulator import simulate, training_joint  # noqa: E402

DEMO_BUNDLE = ROOT / "edge_agent" / "demo_bundle"
KERAS_WEIGHTS = "keras_weights.npz"


# -- timing ---------------------------------------------------------------------------------------
@dataclass
class Timing:
    """Per-call latency in microseconds."""

    median: float
    p90: float
    reps: int

    def cell(self) -> str:
        return f"{self.median:,.1f} / {self.p90:,.1f}"


def time_calls(calls: dict[str, Callable[[int], Any]], reps: int, warmup: int,
               blocks: int = 20) -> dict[str, Timing]:
    """Time each ``call(i)`` one call at a time with ``time.perf_counter``: median and p90 (µs).

    The calls are measured in alternating blocks (``reps / blocks`` calls of each in turn), so a
    burst of load on a shared machine hits all of them alike instead of one of them.
    """
    clock = time.perf_counter
    for call in calls.values():
        for i in range(warmup):
            call(i)
    per_block = max(1, reps // blocks)
    samples = {name: np.empty(per_block * blocks) for name in calls}
    for block in range(blocks):
        for name, call in calls.items():
            out = samples[name]
            base = block * per_block
            for j in range(per_block):
                i = base + j
                start = clock()
                call(i)
                out[i] = clock() - start
    result = {}
    for name, values in samples.items():
        values *= 1e6
        result[name] = Timing(float(np.median(values)), float(np.percentile(values, 90)),
                              len(values))
    return result


def agent_step(model: StatefulModel, inputs: np.ndarray) -> Callable[[int], Any]:
    """``StatefulModel.step`` as the agent calls it: one stream's state in, new state out."""
    state = model.zero_state()
    n = len(inputs)
    return lambda i: model.step(inputs[i % n], state)


def bare_invoke(path: Path, x: np.ndarray) -> Callable[[int], Any]:
    """A bare ``invoke()`` of a freshly loaded interpreter (input set once, no state swap)."""
    interp = load_runtime().interpreter_class(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], x.astype(np.float32).reshape(detail["shape"]))
    invoke = interp.invoke
    return lambda i: invoke()


# -- data -----------------------------------------------------------------------------------------
def held_out(bundle: Bundle, joints: Sequence[int], readings: int, data_seed: int,
             seed_offset: int) -> list[np.ndarray]:
    """Normalised recordings of training joints ``joints`` (physical parameters as in the
    training set written with ``data_seed``) with fresh motion and noise seeds."""
    scale = Normaliser(bundle.manifest.normalisation).global_scale
    sequences = []
    for i in joints:
        sim = simulate(readings, bundle.manifest.sample_period_s or 0.1,
                       seed=seed_offset + data_seed * 1000 + i,
                       params=training_joint(data_seed, i))
        sequences.append(scale.forward_all(sim.values).astype(np.float32))
    return sequences


def outputs_change(bundle: Bundle) -> bool:
    """Whether the exported model outputs the forecast change (``architecture.output``), which
    the agent adds to the reading, rather than the forecast."""
    return getattr(bundle.manifest.architecture, "output", "forecast") == "change"


def stream_forecasts(model: StatefulModel, sequences: Sequence[np.ndarray], change: bool
                     ) -> list[np.ndarray]:
    """One-step forecasts of each sequence, stepped from the zero state, completed as the
    agent completes them (reading + change) when the model outputs the change."""
    return [model.run(seq) + seq if change else model.run(seq) for seq in sequences]


def forecast_mae(forecasts: Sequence[np.ndarray], sequences: Sequence[np.ndarray]) -> float:
    """Mean |forecast of reading t+1 made at t - reading t+1| over every feature and step."""
    return float(np.concatenate([np.abs(p[:-1] - s[1:]).ravel()
                                 for p, s in zip(forecasts, sequences)]).mean())


def deviation(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> tuple[float, float]:
    d = np.concatenate([np.abs(x - y).ravel() for x, y in zip(a, b)])
    return float(d.mean()), float(d.max())


# -- Keras ----------------------------------------------------------------------------------------
@dataclass
class KerasResult:
    predict: Timing
    call: Timing
    forecasts: list[np.ndarray]
    weights_bytes: int
    version: str


def keras_side(bundle: Bundle, sequences: Sequence[np.ndarray], reps: int, warmup: int,
               residual: bool) -> KerasResult:
    from trainer.model import build
    from trainer.tfenv import tensorflow

    tf, keras = tensorflow()
    path = bundle.path / KERAS_WEIGHTS
    with np.load(path) as archive:
        weights = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    manifest = bundle.manifest
    n_features = len(manifest.features)
    layers = manifest.architecture.layers
    # the one-step network in the form that was exported (its output: forecast or change)
    exported_form = ({"change_only": True} if outputs_change(bundle)
                     and "change_only" in inspect.signature(build).parameters else {})
    one_step = build(n_features, layers, batch=1, steps=1, residual=residual, **exported_form)
    one_step.set_weights(weights)
    x = sequences[0][:1][None].astype(np.float32)  # shape (1, 1, F)
    timings = time_calls({"predict": lambda i: one_step.predict(x, verbose=0),
                          "call": lambda i: one_step(x, training=False)}, reps, warmup,
                         blocks=10)
    full = build(n_features, layers, residual=residual)  # outputs the forecast itself
    full.set_weights(weights)
    forecasts = [full.predict(seq[None], verbose=0)[0] for seq in sequences]
    return KerasResult(timings["predict"], timings["call"], forecasts, path.stat().st_size,
                       f"TensorFlow {tf.__version__}, tf-keras {keras.__version__}")


def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it (for tables that get committed)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# -- report ---------------------------------------------------------------------------------------
def table(rows: list[list[str]], markdown: bool) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)
    fmt = lambda r: "  ".join(  # noqa: E731
        (cell.ljust if c == 0 else cell.rjust)(widths[c]) for c, cell in enumerate(r))
    return "\n".join([fmt(rows[0]), "  ".join("-" * w for w in widths)]
                     + [fmt(r) for r in rows[1:]])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=DEMO_BUNDLE,
                   help="bundle folder (default: the demo bundle)")
    p.add_argument("--steps", type=int, default=20000,
                   help="timed repetitions per TFLite measurement (default 20000)")
    p.add_argument("--keras-steps", type=int, default=300,
                   help="timed repetitions per Keras measurement (default 300)")
    p.add_argument("--joints", default="0,5,11,12,13",
                   help="simulated joints for the forecast error: 0-11 are the training set's "
                   "joints (recorded afresh), 12 and up joints never trained on")
    p.add_argument("--readings", type=int, default=3000,
                   help="readings per joint (0.1 s apart; default 3000 = 5 minutes)")
    p.add_argument("--data-seed", type=int, default=7,
                   help="seed of the training set (edge-trainer simulate's default: 7)")
    p.add_argument("--no-residual", dest="residual", action="store_false",
                   help="the network forecasts levels, not changes (trainer model.residual)")
    p.add_argument("--no-keras", dest="keras", action="store_false",
                   help="skip the Keras columns (no TensorFlow needed)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)

    bundle = load_bundle(args.bundle)
    manifest = bundle.manifest
    runtime = load_runtime()
    joints = [int(j) for j in args.joints.split(",") if j.strip()]
    sequences = held_out(bundle, joints, args.readings, args.data_seed, seed_offset=500_000)
    inputs = np.concatenate(sequences)
    warmup = max(200, args.steps // 10)

    specs: list[tuple[str, ModelFile, Path]] = [("int8", manifest.model, bundle.model_path)]
    if manifest.float_model is not None and bundle.float_model_path is not None:
        specs.append(("float", manifest.float_model, bundle.float_model_path))
    forecasts: dict[str, list[np.ndarray]] = {}
    size: dict[str, int] = {}
    calls: dict[str, Callable[[int], Any]] = {}
    for name, spec, path in specs:
        model = StatefulModel(path, spec, runtime)
        size[name] = path.stat().st_size
        forecasts[name] = stream_forecasts(model, sequences, outputs_change(bundle))
        calls[f"step {name}"] = agent_step(model, inputs)
        calls[f"invoke {name}"] = bare_invoke(path, inputs[0])
    timed = time_calls(calls, args.steps, warmup)
    step = {name: timed[f"step {name}"] for name, _, _ in specs}
    invoke = {name: timed[f"invoke {name}"] for name, _, _ in specs}
    keras = None
    if args.keras and (bundle.path / KERAS_WEIGHTS).is_file():
        keras = keras_side(bundle, sequences, args.keras_steps,
                           max(20, args.keras_steps // 10), args.residual)

    na = "—"
    cols = ["int8 TFLite", "float32 TFLite", "Keras (float32)"]
    has_float = "float" in forecasts
    rows = [["", *cols]]
    rows.append(["file size (bytes)", f"{size['int8']:,}",
                 f"{size['float']:,}" if has_float else na,
                 f"{keras.weights_bytes:,} (weights .npz)" if keras else na])

    def timing_row(label: str, int8: Timing | None, flt: Timing | None,
                   ker: Timing | None) -> list[str]:
        return [label] + [t.cell() if t else na for t in (int8, flt, ker)]

    rows.append(timing_row("agent step `StatefulModel.step`, µs median / p90",
                           step["int8"], step.get("float"), None))
    rows.append(timing_row("bare `interpreter.invoke()`, µs median / p90",
                           invoke["int8"], invoke.get("float"), None))
    if keras:
        rows.append(timing_row("one-step `model.predict(x)`, µs median / p90",
                               None, None, keras.predict))
        rows.append(timing_row("one-step `model(x)` direct call, µs median / p90",
                               None, None, keras.call))
    maes = {name: forecast_mae(f, sequences) for name, f in forecasts.items()}
    if keras:
        maes["keras"] = forecast_mae(keras.forecasts, sequences)
    rows.append(["forecast MAE (normalised units)", f"{maes['int8']:.4f}",
                 f"{maes['float']:.4f}" if has_float else na,
                 f"{maes['keras']:.4f}" if keras else na])
    if has_float:
        mean, peak = deviation(forecasts["int8"], forecasts["float"])
        keras_dev = na
        if keras:
            k_mean, k_peak = deviation(keras.forecasts, forecasts["float"])
            keras_dev = f"{k_mean:.1e} / {k_peak:.1e}"
        rows.append(["deviation from the float stream, mean / max", f"{mean:.4f} / {peak:.3f}",
                     "0 / 0", keras_dev])
    persistence = forecast_mae(sequences, sequences)  # "the next reading equals this one"

    heading = (f"bundle {manifest.name!r} ({shown(args.bundle)}), LSTM "
               f"{manifest.architecture.layers}, {len(manifest.features)} features; runtime "
               f"{runtime.describe()}, 1 thread; the model outputs the "
               f"{'forecast change' if outputs_change(bundle) else 'forecast'}"
               + (f"; {keras.version}" if keras else ""))
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
               f"{platform.python_version()}, numpy {np.__version__}")
    notes = [
        f"Latency: median / p90 of {args.steps:,} single calls (TFLite) and "
        f"{args.keras_steps:,} (Keras) after a warm-up, time.perf_counter around each call; "
        "the four TFLite measurements (and the two Keras ones) run in alternating blocks so "
        "that load from other processes hits them alike.",
        "Agent step = StatefulModel.step(x, state): set the stream's h/c state tensors and the "
        "input, invoke, read h/c and the output back (what the agent does per reading). "
        "Bare invoke = interpreter.invoke() alone, input already set.",
        "Keras = the trained network rebuilt with trainer.model.build(batch=1, steps=1) (in "
        "the exported form) and keras_weights.npz; it is stateless (state reset on every "
        "call), so it does less work per call than the streaming models, and its numbers are "
        "not a streaming step.",
        f"Forecast MAE: mean |forecast - next reading| (normalised units, all features) over "
        f"{len(joints)} simulated joints {joints} x {args.readings:,} readings"
        + (" (TFLite: reading + the change the model outputs, as the agent completes it)"
           if outputs_change(bundle) else "") + ", each model "
        "stepped statefully from its zero state (Keras: the full-sequence network, "
        "predict(seq[None]), which equals stepping). Joints below 12 are the training joints "
        "recorded with new seeds; 12 and up were never trained on. "
        f"For scale: repeating the last reading scores {persistence:.4f}.",
    ]
    if args.markdown:
        print(f"*{heading}; {machine}*\n")
        print(table(rows, markdown=True))
        print()
        for note in notes:
            print(f"- {note}")
    else:
        print(heading)
        print(machine)
        print()
        print(table(rows, markdown=False))
        print()
        for note in notes:
            print(f"* {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
