"""What a forecaster that keeps learning would add on NAB (a prototype part, not in the agent).

The int8 LSTM is frozen after NAB's probation; HTM, the best published detector, learns on
every reading. This measures one candidate for the agent: per stream and feature, an
autoregressive forecaster of order p fitted online by recursive least squares with
forgetting factor lambda. Its absolute one-step error, smoothed like the forecast part
(weight ``--alpha``), divided by its root mean square over the validation rows (the last
quarter of the probation, as the trainer splits it) and widened to its own tail over the
probation (0.99 quantile times 1.2, as ``threshold.tail_quantile`` does for the level part),
is taken into the score before the relative threshold lifts it.

For the bundles of a ``edge-trainer benchmark nab`` run, every file is streamed through the
int8 model with the agent's own code: once to read the normalised readings, then once per
setting with the extra part added to the decision's score (the alerts, episodes and the NAB
scoring are the benchmark's). It prints one Markdown table: the standard NAB score over all
files and per folder, a row per setting and one without the part.

It asserts nothing; docs/detection-quality.md quotes its figures. Run from the repository
root, after a benchmark run (a few minutes for the 58 files)::

    python bench/nab_online_ar.py --data-dir NAB/data --labels NAB/labels/combined_windows.json \\
        --bundles runs/nab58/bundles [--orders 4 --forgetting 0.98,0.99]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_agent.bundle import load_bundle  # noqa: E402
from edge_agent.detector import Detector  # noqa: E402
from trainer import nab  # noqa: E402
from trainer.benchmarks import (NAB_AGENT, NabFile, file_stream, nab_files,  # noqa: E402
                                run_arguments, trace_hits)
from trainer.data import training_rows  # noqa: E402
from trainer.evaluate import agent_settings, load_models, stream_through  # noqa: E402

TAIL_QUANTILE, TAIL_MARGIN = 0.99, 1.2  # as configs/nab.yaml widens the level part
MAX_TRACE = 1e4  # bound on the trace of each feature's P matrix (it starts at 100 per weight)


class OnlineAR:
    """Per-feature AR(p) forecasts, refitted after every reading by recursive least squares
    with forgetting (weights on the last p readings and a constant; a (p+1)² matrix each).

    A sine wave is an AR(2) process (x_t = 2 cos(w) x_t-1 - x_t-2): its first forecast is
    off, and within a few periods it is forecast almost exactly:

    >>> ar = OnlineAR(features=1, order=2, forgetting=0.99)
    >>> errors = [ar.step([math.sin(0.3 * t)]) for t in range(60)]
    >>> errors[1] is None, abs(errors[2][0]) > 0.5, abs(errors[-1][0]) < 0.01
    (True, True, True)
    """

    def __init__(self, features: int, order: int, forgetting: float) -> None:
        self.order, self.forgetting = order, forgetting
        self.weights = np.zeros((features, order + 1))
        self.inverse = np.repeat(np.eye(order + 1)[None] * 100.0, features, axis=0)
        self.past: list[np.ndarray] = []

    def step(self, x: Sequence[float]) -> list[float] | None:
        """The error of the forecast of ``x`` (``None`` until ``order`` readings are in);
        then learn from it."""
        x = np.asarray(x, dtype=np.float64)
        errors = None
        if len(self.past) == self.order:
            phi = np.concatenate([np.stack(self.past[::-1], axis=1),
                                  np.ones((len(x), 1))], axis=1)  # features × (p+1)
            e = x - np.einsum("fi,fi->f", self.weights, phi)
            p_phi = np.einsum("fij,fj->fi", self.inverse, phi)  # P phi
            phi_p = np.einsum("fj,fji->fi", phi, self.inverse)  # phi' P
            gain = p_phi / (self.forgetting + np.einsum("fi,fi->f", phi_p, phi))[:, None]
            self.weights += gain * e[:, None]
            inverse = (self.inverse - np.einsum("fi,fj->fij", gain, phi_p)) / self.forgetting
            # Kept symmetric, and bounded: a feature that stops moving teaches nothing, and
            # forgetting would otherwise grow P by 1 / lambda per reading until it overflows.
            inverse = 0.5 * (inverse + np.swapaxes(inverse, 1, 2))
            trace = np.trace(inverse, axis1=1, axis2=2)
            self.inverse = inverse * np.minimum(1.0, MAX_TRACE / trace)[:, None, None]
            errors = e.tolist()
        self.past = (self.past + [x])[-self.order:]
        return errors


def online_part(readings: list[list[float] | None], order: int, forgetting: float, alpha: float,
                probation: int, enter: float) -> np.ndarray:
    """The extra part per row (``-inf`` where there is none), scaled as described above."""
    n = len(readings)
    smoothed = np.full(n, np.nan)
    ar, level = None, None
    for i, x in enumerate(readings):
        if x is None:
            continue
        ar = ar or OnlineAR(len(x), order, forgetting)
        errors = ar.step(x)
        if errors is None:
            continue
        size = math.sqrt(sum(e * e for e in errors) / len(errors))
        level = size if level is None else level + alpha * (size - level)
        smoothed[i] = level
    validation = smoothed[training_rows(probation, 0.25):probation]
    validation = validation[~np.isnan(validation)]
    scale = max(math.sqrt(float(np.mean(validation ** 2))), 1e-9) if validation.size else 1.0
    learning = smoothed[:probation]
    learning = learning[~np.isnan(learning)] / scale
    if learning.size:
        scale *= max(float(np.quantile(learning, TAIL_QUANTILE)) * TAIL_MARGIN / enter, 1.0)
    return np.nan_to_num(smoothed / scale, nan=-np.inf)


def detections(f: NabFile, detector: Detector, part: np.ndarray | None) -> np.ndarray:
    """Rows where an alert started, with ``part`` (per row) in the decision's score."""
    stream = file_stream(f, detector.bundle)
    if part is not None:
        row = [-1]
        process, lift = detector.process, detector.relative.lift

        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            row[0] += 1
            return process(*args, **kwargs)

        def lifted(history, score, enter):  # type: ignore[no-untyped-def]
            return lift(history, max(score, float(part[row[0]])), enter)

        detector.process, detector.relative.lift = counted, lifted  # type: ignore[method-assign]
    return trace_hits(stream_through(detector, stream), len(f.values))


def normalised_readings(f: NabFile, detector: Detector) -> list[list[float] | None]:
    """Each row as the model saw it (``None`` while the stream learns its baseline)."""
    state = detector.new_stream(f.name)
    return [detector.process(state, [float(v)], float(t)).normalised
            for v, t in zip(f.values, f.clock)]


def evaluate(data_dir: Path, labels: Path, bundles: Path, settings: list[tuple[int, float]],
             alpha: float) -> dict[str, dict[str, nab.FileScore]]:
    """NAB file scores per setting name and file key."""
    files, _ = nab_files(data_dir, labels)
    agent = agent_settings(None, NAB_AGENT)
    names = ["none"] + [f"p {p}, lambda {lam:g}" for p, lam in settings]
    scores: dict[str, dict[str, nab.FileScore]] = {n: {} for n in names}
    for i, f in enumerate(files, 1):
        bundle = load_bundle(bundles / f.name)
        model = load_models(bundle, ["int8"])["int8"]
        probe = Detector(bundle, model, agent)
        if probe.relative is None:
            raise SystemExit(f"{bundle.path}: no relative threshold (benchmark configs/nab.yaml)")
        readings = normalised_readings(f, probe)
        for name, setting in zip(names, [None, *settings]):
            detector = Detector(bundle, model, agent)
            part = None if setting is None else online_part(
                readings, setting[0], setting[1], alpha, f.probation, detector.enter)
            hits = detections(f, detector, part)
            scores[name][f.key] = nab.score_file(f.stamps, hits, f.windows)
        print(f"[{i}/{len(files)}] {f.key}", file=sys.stderr, flush=True)
    return scores


def table(scores: dict[str, dict[str, nab.FileScore]]) -> str:
    folders = sorted({key.split("/")[0] for key in next(iter(scores.values()))})
    lines = ["| online part | all files (TP / FN / FP) | " + " | ".join(folders) + " |",
             "|---" * (len(folders) + 2) + "|"]
    for name, per_file in scores.items():
        whole = nab.score_benchmark(list(per_file.values()))
        cells = []
        for folder in folders:
            part = [s for k, s in per_file.items() if k.split("/")[0] == folder]
            if any(s.windows for s in part):
                cells.append(f"{nab.score_benchmark(part).normalised:.1f}")
            else:  # no window to normalise against (artificialNoAnomaly)
                cells.append(f"{sum(s.fp for s in part)} FP")
        lines.append(f"| {name} | {whole.normalised:.1f} ({whole.tp} / {whole.fn} / "
                     f"{whole.fp}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    p = run_arguments(__doc__.split("\n\n")[0])
    p.add_argument("--orders", default="4", help="AR orders p, comma-separated (default 4)")
    p.add_argument("--forgetting", default="0.98,0.99",
                   help="forgetting factors lambda, comma-separated (default 0.98,0.99)")
    p.add_argument("--alpha", type=float, default=0.1,
                   help="smoothing weight of the error (default 0.1, as the forecast part)")
    args = p.parse_args(argv)
    settings = [(int(o), lam) for o in _floats(args.orders) for lam in _floats(args.forgetting)]
    print(table(evaluate(args.data_dir, args.labels, args.bundles, settings, args.alpha)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
