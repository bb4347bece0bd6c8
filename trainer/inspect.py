"""``edge-trainer inspect BUNDLE``: verify a bundle and print what is in it.

Verification is the agent's own: manifest schema, file sizes and sha256, then the model is
loaded in the agent runtime and its tensors and zero state are checked against the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.bundle import Bundle, ModelFile, RelativeThreshold, load_bundle
from edge_agent.detector import parts_note
from edge_agent.model import StatefulModel, load_runtime


def verify(path: str | Path) -> Bundle:
    bundle = load_bundle(path)
    runtime = load_runtime()
    StatefulModel(bundle.model_path, bundle.manifest.model, runtime)
    if bundle.float_model_path is not None and bundle.manifest.float_model is not None:
        StatefulModel(bundle.float_model_path, bundle.manifest.float_model, runtime)
    return bundle


def _model_lines(label: str, spec: ModelFile) -> list[str]:
    lines = [f"{label}: {spec.file}  {spec.kind}  {spec.size_bytes} bytes  sha256 {spec.sha256}"]
    for tensor in spec.state:
        lines.append(f"    state {tensor.name:9s} tensor {tensor.index:3d}  {tensor.dtype:7s} "
                     f"{tensor.shape}  scale {tensor.scale:.3g} zero point {tensor.zero_point}")
    return lines


def relative_note(relative: RelativeThreshold | None, period_s: float | None = None) -> str:
    """The relative threshold in words, if the bundle has one (its spans also as times, a
    score per reading, when the sample period is known).

    >>> print(relative_note(RelativeThreshold(window=5, z=2.5, absolute_margin=2.0))[2:])
    also over it when the mean of the last 5 scores is 2.5 sd above the stream's own history (after 50 scores; calibrated threshold raised x2)
    >>> print(relative_note(RelativeThreshold(absolute_for=4000), 300.0).split("; ")[-1])
    calibrated threshold raised x1, and only the history after 4,000 scores = 14 d)
    >>> print(relative_note(RelativeThreshold(part_z=5.0, horizon=8640), 300.0).split(" (")[0][2:])
    also over it when the mean of the last 5 scores is 2.5 sd above the stream's own history, or that of one part 5 sd above the part's
    >>> print(relative_note(RelativeThreshold(horizon=8640), 300.0).split("; ")[2])
    history forgets beyond ~8,640 scores = 30 d
    """
    if relative is None:
        return ""
    until = (f", and only the history after {span(relative.absolute_for, period_s, 'scores')}"
             if relative.absolute_for is not None else "")
    parts = (f", or that of one part {relative.part_z:g} sd above the part's"
             if relative.part_z is not None else "")
    forgets = (f"history forgets beyond ~{span(relative.horizon, period_s, 'scores')}; "
               if relative.horizon is not None else "")
    return (f"; also over it when the mean of the last {relative.window} scores is "
            f"{relative.z:g} sd above the stream's own history{parts} (after "
            f"{span(relative.min_history, period_s, 'scores')}; {forgets}calibrated threshold "
            f"raised x{relative.absolute_margin:g}{until})")


def widened_note(details: dict[str, Any]) -> str:
    """Which slow parts calibration widened to their own tail (``threshold.tail_quantile``),
    and in how many independent looks a tail widened for its confidence was seen."""
    widened = {k: v for k, v in details.get("widened", {}).items() if v > 1.0}
    looks = details.get("tail_looks", {})
    return ("; scales widened to their own tail: " + ", ".join(
        f"{k} x{v:.3g}" + (f" (seen in {looks[k]:.3g} independent looks)" if k in looks else "")
        for k, v in widened.items())) if widened else ""


def span(readings: float, period_s: float | None, unit: str = "readings") -> str:
    """A count of readings with the time it spans at the bundle's sample period: the scoring
    settings are in readings, so the same config means 30 s at 10 Hz and 5 minutes at 1 Hz.

    >>> span(300, 1.0), span(200, 0.1), span(8640, 300.0), span(50, None)
    ('300 readings = 5 min', '200 readings = 20 s', '8,640 readings = 30 d', '50 readings')
    """
    count = f"{readings:,.0f} {unit}" if readings >= 10 else f"{readings:.2g} {unit}"
    if not period_s:
        return count
    seconds = readings * period_s
    for name, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size:
            return f"{count} = {seconds / size:.2g} {name}"
    return f"{count} = {seconds:.2g} s"


def summary(bundle: Bundle) -> str:
    m = bundle.manifest
    norm, scoring = m.normalisation, m.scoring
    period = m.sample_period_s
    baseline = span(norm.baseline_readings, period)
    mode = (f"per stream (baseline of {baseline})" if norm.per_stream
            else "training-set statistics"
            + (f"; level anchored on a baseline of {baseline}" if scoring.level else ""))
    lines = [
        f"bundle {bundle.path}: OK (schema {m.schema_version}, sha256 and tensors verified)",
        f"name: {m.name}   created {m.created} by trainer {m.trainer_version}",
        f"features ({len(m.features)}): {', '.join(m.features)}",
        f"sample period: {f'{period:g} s' if period else 'unknown'}",
        f"normalisation: {mode}; inputs clipped to ±{norm.clip:g}",
        f"architecture: LSTM {m.architecture.layers}, trained on windows of "
        f"{m.architecture.sequence_length}, forecasting {m.architecture.horizon} step ahead",
        *_model_lines("model", m.model),
    ]
    if m.float_model is not None:
        lines += _model_lines("float model", m.float_model)
    level = "; no level part"
    if scoring.level:
        lv = scoring.level
        level = (f"; level shift alpha {lv.alpha:g} (a recent mean over "
                 f"~{span(1 / lv.alpha, period)}")
        if lv.track_alpha:
            level += ("; the baseline follows drift slower than "
                      f"~{span(1 / lv.track_alpha, period)}")
        if lv.rebase_after:
            rescale = ", its scale widened to a noisier new level" if lv.noise else ""
            level += f"; rebased after {span(lv.rebase_after, period)} away{rescale}"
        level += ")"
    seasonal = "; " + parts_note(scoring, None)
    lines += [
        f"scoring: smoothing alpha {scoring.smoothing.alpha:g} (~"
        f"{span(1 / scoring.smoothing.alpha, period)}){level}{seasonal}; top "
        f"{scoring.top_features} features reported",
        f"threshold ({scoring.threshold.method}): enter {scoring.threshold.enter:.4g}, "
        f"exit {scoring.threshold.exit:.4g}" + widened_note(scoring.threshold.details)
        + relative_note(scoring.threshold.relative, period),
    ]
    t = m.training
    if t:
        lines.append(f"training: {len(t.get('files', []))} file(s), {t.get('train_rows')} train / "
                     f"{t.get('validation_rows')} validation rows, {t.get('epochs_run')} epochs "
                     f"(best {t.get('best_epoch')}), {t.get('seconds')} s")
    p = m.parity
    if p:
        lines.append(f"parity: forecast MAE float {p['float_mae']:.4f}, int8 {p['int8_mae']:.4f}; "
                     f"int8 vs float mean deviation {p['deviation_mean']:.4f}")
    return "\n".join(lines)
