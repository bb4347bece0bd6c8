"""``edge-trainer benchmark skab|nab``: the public benchmarks' protocols, run with our detector.

Both runners train with :func:`trainer.train.run` on what the protocol allows for learning,
then stream every file through the agent's own detector (:mod:`trainer.evaluate`), the int8
model and its float32 export alike, and score the result the benchmark's way.

**SKAB** (point-wise): the first 400 rows of each experiment may be used for fitting or
calibration; the rest of it is its test part; F1, FAR and MAR are pooled over the test parts of
all experiments; the anomaly-free recording may be used for training. Our bundle is trained on
what ``--train`` names (default: the first 400 rows of every experiment *and* the anomaly-free
recording), every experiment is one fresh stream standardised by its own first rows (per-stream
normalisation), and a row's prediction is "an alert episode is open after it".

**NAB** (windows): every file once, in order; its first 15% (NAB's exact rule, capped at 750
rows: :func:`trainer.nab.probation_rows`) is probationary — for learning only, never scored.
Training uses exactly those rows: per file by default (a tiny model learns from that file's
probationary part and nothing else, as NAB's online detectors do), or ``--model generic``
(one model on all files' probationary parts). A detection is a row where a ``start`` alert
fires — what pages an operator. ``update``s belong to an alert already raised: counted too (the
``start+update`` variant, reported for comparison) they add a false positive for every new
peak outside a window, and a true positive where an episode opened *before* a window peaks
again inside it (an alarm that was already on is no fresh detection). Scored by
:mod:`trainer.nab` under all three profiles, normalised.
"""

from __future__ import annotations

import csv
import json
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from edge_agent.bundle import Bundle, load_bundle
from edge_agent.csvdata import parse_timestamp
from edge_agent.detector import Detector, DetectorSettings
from edge_agent.errors import DataError

from . import config as trainer_config
from . import nab
from .data import training_rows
from .evaluate import (Evaluation, FileResult, LabelledStream, agent_settings, delay_summary,
                       draw_file, evaluate_streams, load_models, metrics_dict, read_labelled,
                       Trace, score_trace, settings_dict, stream_through, totals_line,
                       write_outputs)

Log = Callable[[str], None]

ROOT = Path(__file__).resolve().parent.parent
SKAB_CONFIG = ROOT / "configs" / "skab.yaml"
NAB_CONFIG = ROOT / "configs" / "nab.yaml"


def indented(log: Log) -> Log:
    """``log`` with every line of each message indented (a nested step's tables too).

    >>> indented(print)("| a |\\n| b |")
      | a |
      | b |
    """
    return lambda text: log(textwrap.indent(text, "  "))


# -- SKAB ----------------------------------------------------------------------------------------
SKAB_FIT_ROWS = 400
SKAB_LABEL = "anomaly"
#: Published SKAB figures on its full set of files (F1; the data README gives no FAR/MAR).
SKAB_PUBLISHED: list[tuple[str, float, float | None, float | None]] = [
    ("Conv-AE", 0.78, None, None), ("MSET", 0.78, None, None), ("T²+Q (PCA)", 0.76, None, None),
    ("LSTM-AE", 0.74, None, None), ("Vanilla LSTM", 0.54, None, None),
    ("Isolation Forest", 0.29, None, None)]
#: Agent-side settings for the benchmark: the agent's defaults, except that a file is one
#: stream seen whole (SKAB files have gaps of up to 76 s; a gap reset would re-warm the stream).
SKAB_AGENT = {"detection": {"warmup_readings": 20, "gap_reset_s": None},
              "alerts": {"enter_readings": 3, "exit_readings": 10, "update_interval_s": 10,
                         "cooldown_readings": 20}}
TRAIN_CHOICES = ("both", "first-rows", "anomaly-free")


def skab_experiments(data_dir: Path, subsets: Sequence[str] | None = None) -> list[Path]:
    """Every experiment CSV below ``data_dir`` (not the anomaly-free recording), by folder and
    number; ``subsets`` keeps only those folders (``valve1``, ``other``, ...)."""
    files = [p for p in data_dir.rglob("*.csv")
             if "anomaly-free" not in p.relative_to(data_dir).parts[:-1]
             and p.stem != "anomaly-free"]
    if subsets:
        files = [p for p in files if p.parent.name in set(subsets)]
    files.sort(key=lambda p: (str(p.parent), int(p.stem) if p.stem.isdigit() else 1 << 30,
                              p.stem))
    if not files:
        raise DataError("no SKAB experiment files (*.csv) found"
                        + (f" in folder(s) {list(subsets)}" if subsets else ""), file=str(data_dir))
    return files


def first_rows(source: Path, target: Path, rows: int) -> Path:
    """The header and the first ``rows`` data lines of ``source``, verbatim."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, encoding="utf-8-sig") as handle:
        lines = [handle.readline()]
        for line in handle:
            if len(lines) > rows:
                break
            if line.strip():
                lines.append(line)
    if len(lines) <= rows:
        raise DataError(f"has fewer than {rows} rows to learn from", file=str(source))
    target.write_text("".join(lines), encoding="utf-8")
    return target


def skab_training_files(data_dir: Path, experiments: Sequence[Path], train_on: str,
                        work: Path) -> list[str]:
    if train_on not in TRAIN_CHOICES:
        raise ValueError(f"--train must be one of {TRAIN_CHOICES}")
    files: list[str] = []
    if train_on in ("both", "anomaly-free"):
        free = sorted(data_dir.rglob("anomaly-free.csv"))
        if not free:
            raise DataError("no anomaly-free.csv to train on (use --train first-rows)",
                            file=str(data_dir))
        files += [str(p) for p in free]
    if train_on in ("both", "first-rows"):
        for path in experiments:
            name = f"{path.parent.name}-{path.stem}.csv"
            files.append(str(first_rows(path, work / "train-data" / name, SKAB_FIT_ROWS)))
    return files


def config_for(config_path: Path, data: Sequence[str], out: Path, *, name: str | None = None,
               epochs: int | None = None, baseline_cap: int | None = None
               ) -> trainer_config.TrainerConfig:
    """The trainer config with its data paths and output folder (and name, epochs) replaced,
    and its per-stream baseline shortened to ``baseline_cap`` readings if it is longer."""
    config = trainer_config.load(config_path)
    updates: dict[str, Any] = {
        "data": config.data.model_copy(update={"paths": [str(p) for p in data]}),
        "output": config.output.model_copy(update={"dir": str(out),
                                                   **({"name": name} if name else {})})}
    if epochs:
        updates["model"] = config.model.model_copy(update={"epochs": epochs})
    if baseline_cap is not None and config.normalisation.baseline_readings > baseline_cap:
        updates["normalisation"] = config.normalisation.model_copy(
            update={"baseline_readings": baseline_cap})
    return config.model_copy(update=updates)


def train_bundle(config_path: Path, data: Sequence[str], out: Path, *, name: str | None = None,
                 epochs: int | None = None, baseline_cap: int | None = None,
                 log: Log = print) -> Bundle:
    """``trainer.train.run`` with the config's data paths and output folder replaced."""
    from .train import run as train_run

    return train_run(config_for(config_path, data, out, name=name, epochs=epochs,
                                baseline_cap=baseline_cap), log=log)


def _leaderboard_row(name: str, f1: float | None, far: float | None, mar: float | None,
                     note: str) -> str:
    def cell(v: float | None, pct: bool) -> str:
        return "n/a" if v is None else (f"{v:.1%}" if pct else f"{v:.2f}")

    return f"| {name} | {cell(f1, False)} | {cell(far, True)} | {cell(mar, True)} | {note} |"


def skab_leaderboard(ev: Evaluation) -> str:
    lines = ["| detector | F1 | FAR | MAR | source |", "|---|---|---|---|---|"]
    for kind in ev.models:
        for pred, what in (("alarm", "episode open"), ("score", "score ≥ enter")):
            p = ev.pooled(kind, pred)
            assert p is not None
            lines.append(_leaderboard_row(f"**edge-anomaly LSTM {kind}** ({what})", p.f1, p.far,
                                          p.mar, "this run, valve subset"))
    for name, f1, far, mar in SKAB_PUBLISHED:
        lines.append(_leaderboard_row(name, f1, far, mar, "published, full SKAB"))
    return "\n".join(lines)


def run_skab(data_dir: str | Path, *, out: str | Path, config: str | Path = SKAB_CONFIG,
             train_on: str = "first-rows", subsets: Sequence[str] | None = None,
             bundle: str | Path | None = None, agent_config: str | Path | None = None,
             epochs: int | None = None, plots: bool = True, log: Log = print) -> dict[str, Any]:
    """Train (unless ``bundle`` is given), evaluate int8 and float, compare with the board."""
    started = time.perf_counter()
    data_dir, out = Path(data_dir), Path(out)
    experiments = skab_experiments(data_dir, subsets)
    log(f"SKAB: {len(experiments)} experiment(s) in {data_dir}; rows 0-{SKAB_FIT_ROWS - 1} of "
        "each for fitting, the rest scored")
    train_seconds = 0.0
    if bundle is None:
        files = skab_training_files(data_dir, experiments, train_on, out)
        log(f"training on {train_on}: {len(files)} file(s)")
        t0 = time.perf_counter()
        trained = train_bundle(Path(config), files, out / "bundle", epochs=epochs,
                               log=indented(log))
        train_seconds = time.perf_counter() - t0
    else:
        trained = load_bundle(bundle)
        log(f"using the trained bundle {bundle} (no training)")
    settings = agent_settings(agent_config, SKAB_AGENT)
    streams = read_labelled(experiments, trained.manifest.features, SKAB_LABEL,
                            scored_from=SKAB_FIT_ROWS)
    for stream, path in zip(streams, experiments):
        stream.name = f"{path.parent.name}-{path.stem}"
    ev = evaluate_streams(trained, streams, settings, ["int8", "float32"], log)
    board = skab_leaderboard(ev)
    result = {
        "benchmark": "skab", "experiments": len(experiments),
        "subsets": sorted({p.parent.name for p in experiments}),
        "train_on": None if bundle is not None else train_on,
        "config": None if bundle is not None else str(config),
        "bundle_sha256": trained.sha256, "threshold": {"enter": ev.enter, "exit": ev.exit},
        "settings": settings_dict(settings),
        "totals": {kind: {"alarm": metrics_dict(ev.pooled(kind, "alarm")),
                          "score": metrics_dict(ev.pooled(kind, "score")),
                          "delays": delay_summary(ev.delays(kind))} for kind in ev.models},
        "published_f1": {name: f1 for name, f1, _, _ in SKAB_PUBLISHED},
        "train_seconds": round(train_seconds, 1),
    }
    ev.extra = {"benchmark": result}
    write_outputs(ev, out, title="SKAB benchmark", plots=plots, log=log)
    (out / "leaderboard.md").write_text(board + "\n", encoding="utf-8")
    result["seconds"] = round(time.perf_counter() - started, 1)
    (out / "benchmark.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    log("")
    log(board)
    log("")
    log(totals_line(ev))
    log(f"total run time {result['seconds']:.1f} s (training {train_seconds:.1f} s)")
    return result


# -- NAB -----------------------------------------------------------------------------------------
#: Published normalised scores on the full NAB corpus (data README; standard profile only).
NAB_PUBLISHED: list[tuple[str, dict[str, float | None], str]] = [
    ("Numenta HTM", {"standard": 70.0}, "about 70"),
    ("Random Cut Forest", {"standard": 51.7}, ""),
    ("Windowed Gaussian", {"standard": 39.6}, ""),
    ("Random", {"standard": 11.0}, ""),
]
#: A file is one stream seen once, whole: no gap resets (NAB files have gaps of hours), and
#: otherwise the agent's defaults.
NAB_AGENT = {"detection": {"warmup_readings": 20, "gap_reset_s": None},
             "alerts": {"enter_readings": 3, "exit_readings": 10, "update_interval_s": 10,
                        "cooldown_readings": 20}}
MODEL_CHOICES = ("per-file", "generic")


@dataclass
class NabFile:
    """One NAB file: its key in the windows JSON, raw timestamps (as in the file, possibly
    repeated or stepping back), the monotone clock the detector is fed, and values."""

    key: str
    path: Path
    stamps: np.ndarray
    clock: np.ndarray
    values: np.ndarray
    windows: list[nab.Window]

    @property
    def name(self) -> str:
        return Path(self.key).stem

    @property
    def probation(self) -> int:
        return nab.probation_rows(len(self.values))


def read_nab_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``timestamp,value`` rows as they are (NAB files may repeat a timestamp or step back at a
    daylight-saving change; the project's reader rightly refuses that for training data)."""
    stamps, values = [], []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader)]
        if header[:2] != ["timestamp", "value"]:
            raise DataError(f"expected the header timestamp,value, found {header}", file=str(path),
                            row=1)
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                stamps.append(parse_timestamp(row[0]))
                values.append(float(row[1]))
            except (ValueError, IndexError):
                raise DataError(f"unreadable row {row!r}", file=str(path), row=line) from None
            if not np.isfinite(values[-1]):
                raise DataError(f"value {row[1]!r} is not finite", file=str(path), row=line)
    return np.asarray(stamps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def monotone_clock(stamps: np.ndarray, step: float = 1e-3) -> np.ndarray:
    """The timestamps, nudged forward by ``step`` where one repeats or steps back, so the
    detector takes every row once and in order (it drops duplicate and late readings).

    >>> [round(float(t), 6) for t in monotone_clock(np.array([0.0, 5.0, 5.0, 3.0, 9.0]))]
    [0.0, 5.0, 5.001, 5.002, 9.0]
    """
    clock = stamps.astype(np.float64).copy()
    for i in range(1, len(clock)):
        if clock[i] <= clock[i - 1]:
            clock[i] = clock[i - 1] + step
    return clock


def nab_files(data_dir: Path, labels: Path) -> tuple[list[NabFile], list[str]]:
    """The files of ``data_dir`` that the windows JSON knows, in its order; and the JSON keys
    whose files are absent (a subset of the corpus)."""
    windows = nab.load_windows(labels)
    files, missing = [], []
    for key in sorted(windows):
        path = data_dir / key
        if not path.is_file():
            missing.append(key)
            continue
        stamps, values = read_nab_csv(path)
        files.append(NabFile(key, path, stamps, monotone_clock(stamps), values, windows[key]))
    if not files:
        raise DataError(f"none of the {len(windows)} files named in {labels} is below this "
                        "folder", file=str(data_dir))
    return files, missing


HALVES = ("even", "odd")


def every_other(files: Sequence[NabFile], half: str) -> list[NabFile]:
    """One half of the files, alternating in the windows file's (sorted) order, counting from
    0: settings are chosen on one half and reported on the other.

    >>> every_other(list("abcde"), "even"), every_other(list("abcde"), "odd")
    (['a', 'c', 'e'], ['b', 'd'])
    """
    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES}, not {half!r}")
    return list(files[HALVES.index(half)::2])


def write_probation(f: NabFile, folder: Path) -> Path:
    """The file's probationary rows (the only ones NAB lets a detector learn from) as CSV, on
    the monotone clock so the trainer's strict reader takes them."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{f.name}.csv"
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        for t, v in zip(f.clock[:f.probation], f.values[:f.probation]):
            writer.writerow([f"{t:.3f}", repr(float(v))])  # epoch seconds, exact to the ms
    return target


TrainJob = tuple[str, str, str, str, int | None, int | None]
"""config, data file, bundle folder, bundle name, epochs, baseline cap (see ``config_for``)"""


def baseline_caps(files: Sequence[NabFile], config: trainer_config.TrainerConfig,
                  log: Log = print) -> dict[str, int]:
    """Each file's longest possible per-stream baseline: its probationary rows' training part.

    NAB lets a detector learn from at most 15 % of a file; the full corpus's shortest file
    (1,127 rows) leaves 127 training rows, fewer than the configured baseline. Such a file's
    baseline is shortened to what it has (logged), instead of stopping the whole run."""
    fraction = config.data.validation_fraction
    wanted = config.normalisation.baseline_readings
    caps = {f.key: training_rows(f.probation, fraction) for f in files}
    for f in files:
        if config.normalisation.per_stream and caps[f.key] < wanted:
            log(f"{f.name}: {f.probation} probationary rows leave {caps[f.key]} to train on; its "
                f"per-stream baseline is {caps[f.key]} readings instead of {wanted}")
    return caps


def _train_one(args: TrainJob) -> str:
    """Train one file's model (in a worker process); returns its bundle folder."""
    config, data, out, name, epochs, baseline_cap = args
    train_bundle(Path(config), [data], Path(out), name=name, epochs=epochs,
                 baseline_cap=baseline_cap, log=lambda line: None)
    return out


def _train_many(jobs_args: list[TrainJob], jobs: int) -> Iterator[str]:
    """Per-file training, ``jobs`` processes at a time (TensorFlow is mostly fixed overhead
    for models this small, so two processes nearly halve the time on two cores). Yields each
    bundle folder in order as soon as it is written, so the caller's progress moves with it."""
    if jobs <= 1 or len(jobs_args) <= 1:
        yield from map(_train_one, jobs_args)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_train_one, jobs_args)


def detections(result: FileResult, model: str, with_updates: bool = False) -> np.ndarray:
    """Rows where an alert ``start`` fired (and ``update``, if asked)."""
    return trace_hits(result.traces[model], len(result.stream), with_updates)


def detections_by_lift(trace: Trace, score: nab.FileScore) -> dict[str, dict[str, int]]:
    """What put each counted detection (an alert ``start``) over the threshold — the
    calibrated score or a history that lifted it (``Alert.lift_label``) — for the windows it
    caught (``tp``) and for its false positives (``fp``): which rule the alarms come from."""
    lift = {row: alert.lift_label for row, alert in trace.events if alert.type == "start"}
    return {"tp": dict(Counter(lift[w.detection_row] for w in score.windows
                               if w.detection_row is not None)),
            "fp": dict(Counter(lift[fp.row] for fp in score.false_positives))}


def trace_hits(trace: Trace, n_rows: int, with_updates: bool = False) -> np.ndarray:
    hits = np.zeros(n_rows, dtype=bool)
    kinds = {"start", "update"} if with_updates else {"start"}
    for row, alert in trace.events:
        if alert.type in kinds:
            hits[row] = True
    return hits


def file_stream(f: NabFile, bundle: Bundle) -> LabelledStream:
    """One NAB file as the labelled stream the evaluation feeds a detector (labels come later,
    from the windows the scorer places)."""
    return LabelledStream(f.name, str(f.path), list(bundle.manifest.features),
                          f.values.reshape(-1, 1), f.clock, None, f.probation)


def threshold_sweep(files: Sequence[NabFile], bundles: dict[str, Bundle],
                    detectors: dict[str, Detector], settings: DetectorSettings,
                    scales: Sequence[float]) -> list[dict[str, Any]]:
    """NAB's own way of setting a threshold, for comparison with the published scores: one
    multiplier on every file's thresholds, each candidate scored over all the files (int8,
    standard profile). The best is chosen on the files it is reported on, as NAB's
    optimiser does; the per-file calibration the benchmark reports is multiplier 1."""
    rows = []
    for scale in scales:
        scaled = replace(settings, threshold_scale=settings.threshold_scale * scale)
        scores = []
        for f in files:
            bundle = bundles[f.key]
            detector = Detector(bundle, detectors[bundle.sha256].model, scaled)
            trace = stream_through(detector, file_stream(f, bundle))
            scores.append(nab.score_file(f.stamps, trace_hits(trace, len(f.values)), f.windows,
                                         nab.PROFILES["standard"]))
        total = nab.score_benchmark(scores)
        rows.append({"scale": scale, "standard": round(total.normalised, 2), "tp": total.tp,
                     "fn": total.fn, "fp": total.fp})  # rounded as every JSON figure
    return rows


def sweep_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The sweep as a table, the best multiplier in bold.

    >>> print(sweep_markdown([{"scale": 0.8, "standard": 53.7, "tp": 5, "fn": 1, "fp": 9},
    ...                       {"scale": 1.0, "standard": 49.7, "tp": 4, "fn": 2, "fp": 3}]))
    | threshold multiplier | 0.8 | 1 |
    |---|---|---|
    | NAB standard (int8) | **53.7** | 49.7 |
    | windows caught / missed / false positives | 5 / 1 / 9 | 4 / 2 / 3 |
    """
    best = max(rows, key=lambda r: r["standard"])
    def cell(r: dict[str, Any]) -> str:
        return f"**{r['standard']:.1f}**" if r is best else f"{r['standard']:.1f}"
    return "\n".join([
        "| threshold multiplier | " + " | ".join(f"{r['scale']:g}" for r in rows) + " |",
        "|---|" + "---|" * len(rows),
        "| NAB standard (int8) | " + " | ".join(cell(r) for r in rows) + " |",
        "| windows caught / missed / false positives | "
        + " | ".join(f"{r['tp']} / {r['fn']} / {r['fp']}" for r in rows) + " |"])


def _window_labels(score: nab.FileScore, n: int) -> np.ndarray:
    labels = np.zeros(n, dtype=np.float64)
    for w in score.windows:
        if w.first_row is not None and w.last_row is not None:
            labels[w.first_row:w.last_row + 1] = 1.0
    return labels


def nab_leaderboard(scores: dict[str, dict[str, nab.BenchmarkScore]], what: str,
                    scored: str = "NAB subset") -> str:
    """Our rows (one per model) above the published ones; ``scored`` says what this run
    covered (the published rows are the full corpus)."""
    profiles = list(nab.PROFILES)
    lines = ["| detector | " + " | ".join(profiles) + " | source |",
             "|---|" + "---|" * len(profiles) + "---|"]
    for model, by_profile in scores.items():
        lines.append(f"| **edge-anomaly LSTM {model}** ({what}) | "
                     + " | ".join(f"{by_profile[p].normalised:.1f}" for p in profiles)
                     + f" | this run, {scored} |")
    for name, values, note in NAB_PUBLISHED:
        cells = []
        for p in profiles:
            v = values.get(p)
            cells.append("n/a" if v is None else (note or f"{v:.1f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " | published, full NAB |")
    return "\n".join(lines)


def run_nab(data_dir: str | Path, labels: str | Path, *, out: str | Path,
            config: str | Path = NAB_CONFIG, model: str = "per-file",
            agent_config: str | Path | None = None, epochs: int | None = None,
            reuse: str | Path | None = None, jobs: int = 2, plots: bool = True,
            recalibrate: bool = False, half: str | None = None,
            threshold_scales: Sequence[float] = (), log: Log = print) -> dict[str, Any]:
    """Train on probationary rows only, stream every file once, score NAB's way.

    Returns the summary written to ``benchmark.json``, plus ``file_scores``: the int8 model's
    per-file ``nab.FileScore`` objects by profile (start alerts), for ``crossval``.

    With ``reuse``, the bundles of an earlier run are evaluated again; with ``recalibrate``
    too, each one's scoring is first calibrated again on its file's probationary rows with
    ``config`` (copies in ``out``; for a change of scoring settings without training).
    With ``threshold_scales``, also :func:`threshold_sweep` (``threshold-sweep.md``)."""
    if model not in MODEL_CHOICES:
        raise ValueError(f"--model must be one of {MODEL_CHOICES}")
    if recalibrate and (reuse is None or model != "per-file"):
        raise ValueError("--recalibrate needs --bundles and per-file models")
    started = time.perf_counter()
    data_dir, out = Path(data_dir), Path(out)
    files, missing = nab_files(data_dir, Path(labels))
    if half is not None:
        files = every_other(files, half)
    if not any(f.windows for f in files):
        raise DataError(f"{labels} gives none of these {len(files)} file(s) an anomaly window: "
                        "NAB's score is normalised against the windows, so add at least one "
                        "labelled file", file=str(data_dir))
    log(f"NAB: {len(files)} file(s) in {data_dir} ({len(missing)} named in the windows file are "
        f"absent); probationary rows (learning only): NAB's 15% rule, at most "
        f"{nab.probation_rows(10 ** 9)}")
    train_files = [write_probation(f, out / "train-data") for f in files]
    caps = baseline_caps(files, trainer_config.load(Path(config)), log)
    settings = agent_settings(agent_config, NAB_AGENT)
    train_seconds = 0.0
    bundles: dict[str, Bundle] = {}
    t0 = time.perf_counter()
    if reuse is not None:
        folder = Path(reuse)
        bundles = {f.key: load_bundle(folder / ("generic" if model == "generic" else f.name))
                   for f in files}
        log(f"using the bundles trained before in {folder} (no training)")
        if recalibrate:
            from .recalibrate import recalibrate as recalibrate_bundle

            for i, (f, path) in enumerate(zip(files, train_files), 1):
                target = out / "bundles" / f.name
                bundles[f.key] = recalibrate_bundle(
                    folder / f.name,
                    config_for(Path(config), [path], target, baseline_cap=caps[f.key]),
                    out=target, log=lambda line: None)
                log(f"[{i}/{len(files)}] recalibrated {f.name} on its first {f.probation} rows")
    elif model == "generic":
        log(f"training one generic model on {len(files)} probationary parts")
        generic = train_bundle(Path(config), train_files, out / "bundles" / "generic",
                               name="nab-generic", epochs=epochs,
                               baseline_cap=min(caps.values()),
                               log=indented(log))
        bundles = {f.key: generic for f in files}
    else:
        log(f"training one model per file on its probationary rows ({jobs} process(es))")
        jobs_args = [(str(config), str(path), str(out / "bundles" / f.name), f"nab-{f.name}",
                      epochs, caps[f.key]) for f, path in zip(files, train_files)]
        for i, (f, folder) in enumerate(zip(files, _train_many(jobs_args, jobs)), 1):
            bundles[f.key] = load_bundle(folder)
            log(f"[{i}/{len(files)}] trained on {f.name}'s first {f.probation} rows "
                f"({time.perf_counter() - t0:.0f} s)")
    train_seconds = time.perf_counter() - t0

    models = ["int8", "float32"]
    variants = {"start": False, "start+update": True}
    per_file: dict[str, dict[str, dict[str, list[nab.FileScore]]]] = {
        v: {m: {p: [] for p in nab.PROFILES} for m in models} for v in variants}
    file_rows = []
    loaded: dict[str, dict[str, Detector]] = {}
    t1 = time.perf_counter()
    for i, f in enumerate(files, 1):
        bundle = bundles[f.key]
        if bundle.sha256 not in loaded:
            loaded[bundle.sha256] = {kind: Detector(bundle, m, settings)
                                     for kind, m in load_models(bundle, models).items()}
        detectors = loaded[bundle.sha256]
        stream = file_stream(f, bundle)
        traces = {kind: stream_through(det, stream) for kind, det in detectors.items()}
        result = FileResult(stream, traces, {})
        row: dict[str, Any] = {"file": f.key, "rows": len(f.values), "probation": f.probation,
                               "windows": len(f.windows)}
        for variant, with_updates in variants.items():
            for kind in models:
                hits = detections(result, kind, with_updates)
                for pname, profile in nab.PROFILES.items():
                    fs = nab.score_file(f.stamps, hits, f.windows, profile)
                    per_file[variant][kind][pname].append(fs)
                    if variant == "start" and pname == "standard":
                        row[kind] = _file_json(fs)
                        row[kind]["by_lift"] = detections_by_lift(traces[kind], fs)
        labelled = _window_labels(per_file["start"]["int8"]["standard"][-1], len(f.values))
        stream.labels = labelled
        result.results = {kind: score_trace(stream, tr, detectors[kind].enter)
                          for kind, tr in traces.items()}
        file_rows.append(row)
        if plots:
            (out / "plots").mkdir(parents=True, exist_ok=True)
            s = row["int8"]
            draw_file(out / "plots" / f"{f.name}.png", result, detectors["int8"].enter,
                      detectors["int8"].exit,
                      extra_title=f" | NAB standard (int8): {s['tp']} TP, {s['fn']} FN, "
                                  f"{s['fp']} FP, raw {s['raw']:+.2f}")
        log(f"[{i}/{len(files)}] {f.name}: {len(f.values)} rows, {len(f.windows)} window(s); "
            + "; ".join(f"{kind} {row[kind]['tp']} TP {row[kind]['fn']} FN {row[kind]['fp']} FP"
                        for kind in models)
            + f" ({time.perf_counter() - t1:.1f} s)")

    totals = {v: {m: {p: nab.score_benchmark(per_file[v][m][p]) for p in nab.PROFILES}
                  for m in models} for v in variants}
    n_windows = sum(len(f.windows) for f in files)
    board = nab_leaderboard(totals["start"], "start alerts",
                            f"{len(files)} files, {n_windows} windows")
    spread = {p: nab.resampled_interval(per_file["start"]["int8"][p]) for p in nab.PROFILES}
    result_json = {
        "benchmark": "nab", "files": len(files), "absent": missing, "model": model,
        "half": half,
        "config": str(config), "settings": settings_dict(settings),
        "detections": "rows where an alert 'start' fired",
        "totals": {v: {m: {p: _bench_json(s) for p, s in by_p.items()}
                       for m, by_p in by_m.items()} for v, by_m in totals.items()},
        "resampled": {"what": "int8, start alerts: central 90% of the pooled normalised score "
                                "over 2000 resamples of the files with replacement",
                      **{p: [round(lo, 1), round(hi, 1)] for p, (lo, hi) in spread.items()}},
        "folders": folder_totals([f.key for f in files], per_file["start"]),
        "detections_by_lift": {kind: {outcome: _summed(row[kind]["by_lift"][outcome]
                                                       for row in file_rows)
                                      for outcome in ("tp", "fp")} for kind in models},
        "files_detail": file_rows,
        "published_standard": {name: values.get("standard") for name, values, _ in NAB_PUBLISHED},
        "train_seconds": round(train_seconds, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text(board + "\n", encoding="utf-8")
    (out / "summary.md").write_text(_nab_markdown(result_json, board), encoding="utf-8")
    if threshold_scales:
        sweep = threshold_sweep(files, bundles, {sha: d["int8"] for sha, d in loaded.items()},
                                settings, threshold_scales)
        result_json["threshold_sweep"] = sweep
        (out / "threshold-sweep.md").write_text(sweep_markdown(sweep) + "\n", encoding="utf-8")
    result_json["seconds"] = round(time.perf_counter() - started, 1)
    (out / "benchmark.json").write_text(json.dumps(result_json, indent=1) + "\n",
                                        encoding="utf-8")
    log("")
    log(board)
    if len(result_json["folders"]) > 1:
        log("per folder (int8, each pooled on its own):")
        log(_folders_markdown(result_json["folders"]))
    log(_resampled_line(result_json))
    log("what put the detections over the threshold (int8, standard):")
    log(_lift_markdown(result_json["detections_by_lift"]["int8"]))
    upd = totals["start+update"]
    log("counting updates as detections too: standard "
        + ", ".join(f"{m} {upd[m]['standard'].normalised:.1f}" for m in models))
    if threshold_scales:
        log("one threshold multiplier for every file, chosen on these files (NAB's own way, "
            "in-sample; this run's own figure is multiplier 1):")
        log(sweep_markdown(result_json["threshold_sweep"]))
    log(f"total run time {result_json['seconds']:.1f} s (training {train_seconds:.1f} s)")
    result_json["file_scores"] = per_file["start"]["int8"]  # for crossval; not in the JSON
    return result_json


def _file_json(fs: nab.FileScore) -> dict[str, Any]:
    return {"raw": round(fs.raw, 4), "tp": fs.tp, "fn": fs.fn, "fp": fs.fp,
            "windows": [{"first_row": w.first_row, "last_row": w.last_row,
                         "detection_row": w.detection_row,
                         "position": None if w.position is None else round(w.position, 4),
                         "score": round(w.score, 4)} for w in fs.windows if w.scored],
            "false_positive_rows": [fp.row for fp in fs.false_positives]}


def folder_totals(keys: Sequence[str], scores: dict[str, dict[str, list[nab.FileScore]]]
                  ) -> dict[str, dict[str, Any]]:
    """Each data folder (NAB's categories: ``realTweets``, ``realAWSCloudwatch``, ...) pooled
    on its own, per model and profile, the way the whole corpus is.

    Detectors differ most between kinds of stream, and a corpus total hides which kind costs
    what. A folder without any window (``artificialNoAnomaly``) has nothing to normalise
    against: its ``normalised`` is None and its raw score counts only false positives.
    """
    folders: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        folders.setdefault(key.split("/")[0] if "/" in key else ".", []).append(i)
    result: dict[str, dict[str, Any]] = {}
    for folder, rows in sorted(folders.items()):
        entry: dict[str, Any] = {"files": len(rows)}
        for model, by_profile in scores.items():
            entry[model] = {p: _pooled_json([fs[i] for i in rows]) for p, fs in by_profile.items()}
        entry["windows"] = entry["int8"]["standard"]["tp"] + entry["int8"]["standard"]["fn"]
        result[folder] = entry
    return result


def _pooled_json(scores: list[nab.FileScore]) -> dict[str, Any]:
    if any(s.perfect != s.null for s in scores):
        return _bench_json(nab.score_benchmark(scores))
    return {"normalised": None, "raw": round(sum(s.raw for s in scores), 4), "tp": 0, "fn": 0,
            "fp": sum(s.fp for s in scores)}


def _bench_json(s: nab.BenchmarkScore) -> dict[str, Any]:
    return {"normalised": round(s.normalised, 2), "raw": round(s.raw, 4), "tp": s.tp,
            "fn": s.fn, "fp": s.fp}


def _resampled_line(result: dict[str, Any]) -> str:
    """The bootstrap interval of the int8 score, one line (``nab.resampled_interval``)."""
    spread = result["resampled"]
    return (f"int8 with other files like these ({result['files']} drawn with replacement, "
            "2000 times; central 90%): "
            + ", ".join(f"{p} {spread[p][0]:.1f} to {spread[p][1]:.1f}" for p in nab.PROFILES))


def _summed(counts: Iterator[dict[str, int]]) -> dict[str, int]:
    """Counts added up, most first."""
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(total.most_common())


def _lift_markdown(by_lift: dict[str, dict[str, int]]) -> str:
    """Windows caught and false positives (int8, standard) by what put the detection over
    the threshold."""
    names = sorted(set(by_lift["tp"]) | set(by_lift["fp"]),
                   key=lambda n: -(by_lift["tp"].get(n, 0) + by_lift["fp"].get(n, 0)))
    return "\n".join(["| over the threshold by | windows caught | false positives |",
                      "|---|---|---|"] + [f"| {n} | {by_lift['tp'].get(n, 0)} | "
                                          f"{by_lift['fp'].get(n, 0)} |" for n in names])


def _folders_markdown(folders: dict[str, dict[str, Any]]) -> str:
    """The per-folder totals as a table: normalised scores under the three profiles (n/a for
    a folder without windows) and windows caught / missed / false positives."""
    lines = ["| folder | files | windows | " + " | ".join(nab.PROFILES)
             + " | TP / FN / FP (standard) |", "|---|---|---|" + "---|" * len(nab.PROFILES) + "---|"]
    for folder, entry in folders.items():
        by_profile = entry["int8"]
        cells = ["n/a" if by_profile[p]["normalised"] is None
                 else f"{by_profile[p]['normalised']:.1f}" for p in nab.PROFILES]
        std = by_profile["standard"]
        lines.append(f"| {folder} | {entry['files']} | {entry['windows']} | " + " | ".join(cells)
                     + f" | {std['tp']} / {std['fn']} / {std['fp']} |")
    return "\n".join(lines)


def _nab_markdown(result: dict[str, Any], board: str) -> str:
    lines = ["# NAB benchmark", "",
             (f"{result['files']} file(s); model: {result['model']}; detections: rows where an "
              "alert `start` fired."), "", board, "", _resampled_line(result), "",
             "## Per folder (int8, pooled like the whole run)", "",
             _folders_markdown(result["folders"]), "",
             "## What put the detections over the threshold (int8, standard profile)", "",
             ("`calibrated`: the score as the bundle calibrated it; `score_history`: the "
              "stream's own history of its score lifted it (relative threshold); "
              "`<part>_history`: that part's own history (`part_z`)."), "",
             _lift_markdown(result["detections_by_lift"]["int8"]), "",
             "## Per file (standard profile)", "",
             ("| file | rows | probation | windows | int8 TP/FN/FP | int8 raw | "
              "float32 TP/FN/FP | float32 raw |"), "|---|---|---|---|---|---|---|---|"]
    for row in result["files_detail"]:
        q, f = row["int8"], row["float32"]
        lines.append(f"| {row['file']} | {row['rows']} | {row['probation']} | {row['windows']} "
                     f"| {q['tp']}/{q['fn']}/{q['fp']} | {q['raw']:+.2f} | "
                     f"{f['tp']}/{f['fn']}/{f['fp']} | {f['raw']:+.2f} |")
    return "\n".join(lines) + "\n"
