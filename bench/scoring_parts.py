"""What the parts of the score cost per reading: the adaptive forecaster against the rest.

The adaptive part (``scoring.adaptive``) refits a small forecaster per stream and feature
after every reading, in plain Python (the same bits on a Pi as on the workstation). This
times one reading through the agent's whole decision path, ``Detector.process`` (normalise,
score, decide, step the int8 LSTM), for the demo bundle as shipped and with the adaptive part
of a few orders, plus ``Scorer.adaptive_shift`` alone, on one simulated joint past its
baseline and warm-up; and with every part that learns on the device
(``edge_agent.learning``: level rebase, seasonal profile, AR(4), the relative threshold's
score history) with and without a history per part (``relative.part_z``). Median and p90
of single calls in alternating blocks (as ``bench/model_step.py`` times the model), so load
from other processes hits every column alike. Also the Python heap each stream holds
(tracemalloc over 200 streams of 400 readings): the forecaster keeps its weights and matrices
as lists of floats, fast to update and about 1.6 KiB per feature at order 4. It asserts
nothing; docs/detection-quality.md quotes its table.

    python bench/scoring_parts.py [--bundle edge_agent/demo_bundle] [--orders 2,4,8] [--markdown]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_agent.bundle import AdaptiveScoring, Bundle, load_bundle  # noqa: E402
from edge_agent.detector import Detector, DetectorSettings  # noqa: E402
from edge_agent.learning import with_learning_parts, with_relative  # noqa: E402
from edge_agent.model import StatefulModel  # noqa: E402
from edge_agent.scoring import ScoreState  # noqa: E402
from edge_agent.simulator import simulate  # noqa: E402

from model_step import table, time_calls  # noqa: E402  (bench/ is the script's folder)

DEMO_BUNDLE = ROOT / "edge_agent" / "demo_bundle"


def with_adaptive(bundle: Bundle, order: int) -> Bundle:
    """``bundle`` with an adaptive part of ``order`` (forgetting 0.98, as configs/nab.yaml)."""
    n = len(bundle.manifest.features)
    scoring = bundle.manifest.scoring.model_copy(update={"adaptive": AdaptiveScoring(
        order=order, forgetting=0.98, alpha=0.1, scale=[1.0] * n)})
    return bundle.with_scoring(scoring)


def without_part_histories(bundle: Bundle) -> Bundle:
    """``bundle`` (with a relative threshold) judging only the score against its history."""
    relative = bundle.manifest.scoring.threshold.relative
    assert relative is not None
    return with_relative(bundle, relative.model_copy(update={"part_z": None}))


def process_call(bundle: Bundle, rows: list[list[float]], stamps: list[float], warm: int
                 ) -> Callable[[int], Any]:
    """One reading per call (the next one each time) through a detector whose stream has read
    ``warm`` readings."""
    detector = Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model),
                        DetectorSettings())
    stream = detector.new_stream("s")
    for i in range(warm):
        detector.process(stream, rows[i], stamps[i])
    process = detector.process
    following = itertools.count(warm)  # the timer's warm-up calls come first, then the timed
    # ones from i = 0 again: each call takes the next reading, never a repeated timestamp
    return lambda i: process(stream, rows[(n := next(following))], stamps[n])


def heap_per_stream(bundle: Bundle, rows: list[list[float]], stamps: list[float],
                    streams: int = 200, readings: int = 400) -> float:
    """Bytes of Python heap one stream holds after ``readings`` readings."""
    detector = Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model),
                        DetectorSettings())
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = [detector.new_stream(f"s{i}") for i in range(streams)]
    for state in held:
        for row, ts in zip(rows[:readings], stamps[:readings]):
            detector.process(state, row, ts)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / streams


def adaptive_call(bundle: Bundle, rows: list[list[float]]) -> Callable[[int], Any]:
    detector = Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model))
    state, shift = ScoreState(), detector.scorer.adaptive_shift
    for row in rows[:100]:
        shift(state, row)
    return lambda i: shift(state, rows[100 + i])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=DEMO_BUNDLE, help="default: the demo bundle")
    p.add_argument("--orders", default="2,4,8", help="adaptive orders (default 2,4,8)")
    p.add_argument("--reps", type=int, default=20000, help="timed readings per column")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    bundle = load_bundle(args.bundle)
    orders = [int(v) for v in args.orders.split(",") if v.strip()]
    warm = bundle.manifest.normalisation.baseline_readings + 200
    sim = simulate(warm + args.reps + 1000, seed=11)
    rows = sim.values.tolist()
    stamps = (sim.t + 1.7e9).tolist()
    calls = {"as shipped": process_call(bundle, rows, stamps, warm)}
    heaps = {"as shipped": heap_per_stream(bundle, rows, stamps)}
    for order in orders:
        name = f"adaptive AR({order})"
        calls[name] = process_call(with_adaptive(bundle, order), rows, stamps, warm)
        heaps[name] = heap_per_stream(with_adaptive(bundle, order), rows, stamps)
    learning = with_learning_parts(bundle)
    for name, variant in (("every learning part, one score history", without_part_histories(
            learning)), ("every learning part, + a history per part", learning)):
        calls[name] = process_call(variant, rows, stamps, warm)
        heaps[name] = heap_per_stream(variant, rows, stamps)
    for order in orders:
        calls[f"AR({order}) alone"] = adaptive_call(with_adaptive(bundle, order), rows)
    timed = time_calls(calls, args.reps, warmup=500)
    n = len(bundle.manifest.features)
    base = timed["as shipped"].median
    lines = [["", "µs per reading, median / p90", "over as shipped (median)",
              "heap per stream (KiB)"]]
    for name, timing in timed.items():
        extra = "" if name == "as shipped" or "alone" in name else f"+{timing.median - base:.1f}"
        label = (f"`Detector.process`, {name}" if "alone" not in name
                 else f"`Scorer.adaptive_shift`, {name}")
        heap = f"{heaps[name] / 1024:.1f}" if name in heaps else ""
        lines.append([label, timing.cell(), extra, heap])
    print(f"bundle {bundle.manifest.name!r}, {n} features, LSTM "
          f"{bundle.manifest.architecture.layers}; {platform.machine()}, Python "
          f"{platform.python_version()}; {args.reps:,} single readings per row\n")
    print(table(lines, markdown=args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
