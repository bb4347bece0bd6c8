"""Where a NAB run's false alarms start and why its missed windows were missed.

For the bundles of a ``edge-trainer benchmark nab`` run (``--bundles OUT/bundles``) this
streams every file through the int8 model with the agent's own code, as the benchmark does.
It prints one Markdown table, a row per data folder and one for all files:

* false alarms (NAB's false positives: alert starts outside every window, after the
  probation), split by what put the reading that opened the episode over the threshold, as
  the alert itself says (its ``lifted_by``): the score as *calibrated*, or the history that
  lifted it (the score's own, or with ``part_z`` a part's);
* missed windows, split by why: the score never reached ``enter`` inside the window, an
  episode opened before the window was still open when it began (NAB counts an episode
  once, at its start), or the score crossed but too briefly or in a cooldown.

It asserts nothing; docs/detection-quality.md quotes its figures. Run from the repository
root, after a benchmark run::

    python bench/nab_anatomy.py --data-dir NAB/data --labels NAB/labels/combined_windows.json \\
        --bundles runs/nab58/bundles [--per-file]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_agent.bundle import load_bundle  # noqa: E402
from edge_agent.detector import Detector  # noqa: E402
from trainer import nab  # noqa: E402
from trainer.benchmarks import (NAB_AGENT, detections_by_lift, file_stream,  # noqa: E402
                                nab_files, trace_hits)
from edge_agent.history import LIFTS  # noqa: E402
from trainer.evaluate import agent_settings, load_models, stream_through  # noqa: E402

COLUMNS = ("files", "false alarms", *(f"by {name}" for name in LIFTS), "missed windows",
           "never over the threshold", "inside an earlier episode", "crossed briefly")


def anatomy(data_dir: Path, labels: Path, bundles: Path) -> dict[str, Counter[str]]:
    """The counts of ``COLUMNS`` per file key."""
    files, _ = nab_files(data_dir, labels)
    settings = agent_settings(None, NAB_AGENT)
    counts: dict[str, Counter[str]] = {}
    for i, f in enumerate(files, 1):
        bundle = load_bundle(bundles / f.name)
        detector = Detector(bundle, load_models(bundle, ["int8"])["int8"], settings)
        trace = stream_through(detector, file_stream(f, bundle))
        score = nab.score_file(f.stamps, trace_hits(trace, len(f.values)), f.windows)
        c: Counter[str] = Counter(files=1, **{"false alarms": len(score.false_positives)})
        c.update({f"by {name}": n for name, n in detections_by_lift(trace, score)["fp"].items()})
        for w in score.windows:
            if not w.scored or w.detection_row is not None:
                continue
            assert w.first_row is not None and w.last_row is not None
            c["missed windows"] += 1
            inside = trace.scores[w.first_row:w.last_row + 1]
            if w.first_row > 0 and trace.alarm[w.first_row - 1]:
                c["inside an earlier episode"] += 1
            elif not np.nanmax(inside, initial=-np.inf) >= detector.enter:
                c["never over the threshold"] += 1
            else:
                c["crossed briefly"] += 1
        counts[f.key] = c
        print(f"[{i}/{len(files)}] {f.key}: {c['false alarms']} false alarm(s), "
              f"{c['missed windows']} missed window(s)", file=sys.stderr, flush=True)
    return counts


def table(counts: dict[str, Counter[str]], per_file: bool) -> str:
    groups: dict[str, Counter[str]] = {}
    for key, c in counts.items():
        groups.setdefault(key.split("/")[0], Counter()).update(c)
        if per_file:
            groups[key] = c
    groups["**all**"] = sum(counts.values(), Counter())
    lines = ["| folder | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(c[k]) for k in COLUMNS) + " |"
              for name, c in sorted(groups.items(), key=lambda kv: kv[0].startswith("**"))]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, type=Path, help="NAB's data/ folder (or part)")
    p.add_argument("--labels", required=True, type=Path, help="combined_windows.json")
    p.add_argument("--bundles", required=True, type=Path,
                   help="the bundles folder of a `benchmark nab` run (configs/nab.yaml)")
    p.add_argument("--per-file", action="store_true", help="a row per file too")
    args = p.parse_args(argv)
    print(table(anatomy(args.data_dir, args.labels, args.bundles), args.per_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
