"""``edge-trainer train``: the whole path from CSV history to a verified bundle, in order."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from edge_agent.bundle import Architecture, Bundle, Scoring, Smoothing, Threshold, load_bundle
from edge_agent.model import StatefulModel

from . import bundle as bundle_files
from . import report
from .calibrate import calibrate_split
from .config import TrainerConfig
from .data import fit_normalisation, load_split, normalise
from .inspect import span
from .model import train
from .parity import ParityError, check
from .quantize import export, streaming_twin


def spans_note(config: TrainerConfig, period_s: float | None) -> str:
    """The config's main spans, counted in readings, as times at the data's sample period:
    the moment to notice that a template made for 10 Hz waits ten times longer at 1 Hz.

    >>> from trainer.config import TrainerConfig
    >>> spans_note(TrainerConfig(), 1.0)
    'spans at this sample period: baseline 200 readings = 3.3 min, score smoothing ~10 readings = 10 s, level mean ~50 readings = 50 s'
    """
    level = config.scoring.level
    parts = [f"baseline {span(config.normalisation.baseline_readings, period_s)}",
             f"score smoothing ~{span(1 / config.scoring.smoothing_alpha, period_s)}"]
    if level.enabled:
        parts.append(f"level mean ~{span(1 / level.alpha, period_s)}")
        if level.track_alpha:
            parts.append(f"drift followed over ~{span(1 / level.track_alpha, period_s)}")
        if level.rebase_after:
            parts.append(f"rebase after {span(level.rebase_after, period_s)}")
    return "spans at this sample period: " + ", ".join(parts)


def run(config: TrainerConfig, log: Callable[[str], None] = print) -> Bundle:
    started = time.perf_counter()
    log(f"[1/6] reading {len(config.data.paths)} data source(s)")
    split = load_split(config.data)
    rows = sum(len(r) for r in split.recordings)
    period = f"{split.sample_period_s:g} s" if split.sample_period_s else "unknown"
    log(f"      {len(split.recordings)} file(s), {rows} rows, features {split.features}, "
        f"sample period {period}")
    log("      " + spans_note(config, split.sample_period_s))
    norm = fit_normalisation(split.train, config.normalisation)
    train_seqs = [normalise(r, norm) for r in split.train]
    val_seqs = [normalise(v, norm, baseline_from=t)
                for t, v in zip(split.train, split.validation)]

    log(f"[2/6] training LSTM {config.model.layers} on {sum(map(len, train_seqs))} readings")
    result = train(train_seqs, val_seqs, config.model, log)

    log("[3/6] exporting one-step streaming models (int8 and float32)")
    n_features = len(split.features)
    twin = streaming_twin(result.model, n_features, config.model.layers,
                          config.model.residual)
    exported = export(twin, train_seqs, config.export.representative_readings)
    folder = Path(config.output.dir)
    int8_spec, float_spec = bundle_files.write_models(folder, exported)
    bundle_files.write_keras_weights(folder, result.model.get_weights())
    log(f"      int8 {int8_spec.size_bytes} bytes, float32 {float_spec.size_bytes} bytes")

    log("[4/6] parity gate: int8 vs float, streamed with the agent runtime")
    keras_forecasts = [result.model.predict(seq[None], verbose=0)[0] for seq in val_seqs]
    parity = check(folder, int8_spec, float_spec, val_seqs, config.export.parity_tolerance,
                   keras_forecasts, outputs_change=config.model.residual)
    log("      " + parity.summary())
    if not parity.ok:
        raise ParityError(f"int8 model rejected: its forecast error is {parity.excess:.1%} above "
                          f"the float model's (tolerance {parity.tolerance:.0%}). Try more "
                          "representative readings, more training, or a larger tolerance.")

    log("[5/6] calibrating scoring on validation data with the agent's detector (int8)")
    placeholder = Scoring(error_scale=[1.0] * n_features, smoothing=Smoothing(alpha=1.0),
                          threshold=Threshold(enter=1.0, exit=1.0, method="placeholder"))
    architecture = Architecture(layers=list(config.model.layers),
                                sequence_length=config.model.sequence_length,
                                output="change" if config.model.residual else "forecast")
    training = {
        "files": [{"path": Path(r.path).name, "rows": len(r)} for r in split.recordings],
        "train_rows": sum(len(r) for r in split.train),
        "validation_rows": sum(len(r) for r in split.validation),
        "validation_fraction": config.data.validation_fraction,
        "epochs_run": len(result.history.get("loss", [])), "best_epoch": result.best_epoch,
        "final_loss": result.history["loss"][-1],
        "best_val_loss": float(np.min(result.history["val_loss"])),
        "seconds": round(result.seconds, 1), "seed": config.model.seed,
        "feature_mean": norm.mean, "feature_std": norm.std,
    }

    def manifest_with(scoring: Scoring) -> bundle_files.Manifest:
        return bundle_files.manifest(
            name=config.output.name, features=split.features,
            sample_period_s=split.sample_period_s, normalisation=norm,
            architecture=architecture, model=int8_spec,
            float_model=float_spec if config.output.keep_float_model else None,
            scoring=scoring, training=training, parity=parity.as_dict())

    draft = Bundle(path=folder, manifest=manifest_with(placeholder))
    model = StatefulModel(folder / int8_spec.file, int8_spec)
    cal = calibrate_split(draft, model, split, config.scoring, log)
    threshold = cal.scoring.threshold

    log(f"[6/6] writing bundle {folder}")
    content = manifest_with(cal.scoring)
    bundle_files.finish(folder, content, config.output.keep_float_model)
    if config.output.report:
        path = report.draw(folder / "report.png", title=f"{config.output.name}: training report",
                           history=result.history, features=split.features,
                           trace=cal.traces[0], enter=threshold.enter, exit=threshold.exit)
        log(f"      report {path}")
    verified = load_bundle(folder)
    log(f"done in {time.perf_counter() - started:.1f} s: {folder} (sha256 {verified.sha256[:12]})")
    return verified
