"""``edge-trainer``: train, inspect, simulate, evaluate, benchmark (``edge-trainer --help``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from edge_agent.errors import EdgeError, run_cli


def _config(args: argparse.Namespace):
    """The trainer config named by ``--config``, with ``--data`` (if given) as its data paths."""
    from . import config as trainer_config

    config = trainer_config.load(args.config)
    if args.data:
        config = config.model_copy(update={"data": config.data.model_copy(
            update={"paths": [str(Path(p)) for p in args.data]})})
    return config


def _train(args: argparse.Namespace) -> int:
    from .train import run

    config = _config(args)
    output = config.output
    if args.out:
        output = output.model_copy(update={"dir": str(Path(args.out))})
    if args.name:
        output = output.model_copy(update={"name": args.name})
    model = config.model
    if args.epochs:
        model = model.model_copy(update={"epochs": args.epochs})
    run(config.model_copy(update={"output": output, "model": model}))
    return 0


def _recalibrate(args: argparse.Namespace) -> int:
    from .recalibrate import recalibrate

    recalibrate(args.bundle, _config(args), out=args.out)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .inspect import summary, verify

    print(summary(verify(args.bundle)))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from edge_agent.simulator import write_training_set

    paths = write_training_set(args.out, files=args.files, minutes=args.minutes,
                               period_s=args.period, seed=args.seed)
    print(f"wrote {len(paths)} simulated joint recordings to {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import run

    run(args.bundle, args.data, out=args.out, label_column=args.label_column,
        use_float=args.float, agent_config=args.agent_config, scored_from=args.scored_from,
        plots=not args.no_plots, log=_log(args))
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    import json

    from . import benchmarks

    common = dict(out=args.out or f"runs/{args.suite}", agent_config=args.agent_config,
                  epochs=args.epochs,
                  plots=not args.no_plots, log=_log(args))
    if args.choose and args.suite != "nab":
        raise EdgeError("--choose is for benchmark nab")
    if args.suite == "skab":
        result = benchmarks.run_skab(args.data_dir, config=args.config or benchmarks.SKAB_CONFIG,
                                     train_on=args.train, subsets=args.subset,
                                     bundle=args.bundle, **common)
    elif args.choose:
        from .crossval import run_nab_choice

        if not args.labels or not args.bundles:
            raise EdgeError("benchmark nab --choose needs --labels and --bundles (the trained "
                            "bundles of an earlier run: each value recalibrates them)")
        result = run_nab_choice(args.data_dir, args.labels, out=args.out or "runs/nab-choice",
                                config=args.config or benchmarks.NAB_CONFIG,
                                bundles=args.bundles, choose=args.choose,
                                agent_config=args.agent_config, half=args.half,
                                log=_log(args))
    else:
        if not args.labels:
            raise EdgeError("benchmark nab needs --labels (NAB's combined_windows.json)")
        result = benchmarks.run_nab(args.data_dir, args.labels,
                                    config=args.config or benchmarks.NAB_CONFIG,
                                    model=args.model, reuse=args.bundles, jobs=args.jobs,
                                    recalibrate=args.recalibrate, half=args.half,
                                    threshold_scales=args.threshold_scales or (), **common)
    if args.json:
        print(json.dumps({k: v for k, v in result.items()
                          if k not in ("files_detail", "file_scores")}, indent=1))
    return 0


def _scales(text: str) -> list[float]:
    try:
        scales = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not scales or any(not v > 0 for v in scales):
        raise argparse.ArgumentTypeError(f"multipliers must be positive numbers: {text!r}")
    return scales


def _log(args: argparse.Namespace):
    return (lambda line: print(line, file=sys.stderr)) if getattr(args, "json", False) else print


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-trainer", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, export int8, calibrate and write a bundle")
    t.add_argument("--config", required=True, help="trainer YAML (see configs/trainer.yaml)")
    t.add_argument("--data", action="append", help="CSV file, folder or glob (repeatable); "
                   "replaces data.paths")
    t.add_argument("--out", help="bundle folder; replaces output.dir")
    t.add_argument("--name", help="model name; replaces output.name")
    t.add_argument("--epochs", type=int, help="replaces model.epochs")
    t.set_defaults(func=_train)
    r = sub.add_parser("recalibrate", help="calibrate a trained bundle's scoring again (new "
                       "scoring settings, no training)")
    r.add_argument("bundle")
    r.add_argument("--config", required=True, help="trainer YAML whose data and scoring "
                   "sections to use")
    r.add_argument("--data", action="append", help="CSV file, folder or glob (repeatable); "
                   "replaces data.paths")
    r.add_argument("--out", help="write a recalibrated copy here (default: the bundle itself)")
    r.set_defaults(func=_recalibrate)

    i = sub.add_parser("inspect", help="verify a bundle and print a summary")
    i.add_argument("bundle")
    i.set_defaults(func=_inspect)
    s = sub.add_parser("simulate", help="write simulated robot-joint recordings (normal only)")
    s.add_argument("--out", required=True)
    s.add_argument("--files", type=int, default=12)
    s.add_argument("--minutes", type=float, default=10.0)
    s.add_argument("--period", type=float, default=0.1, help="seconds between readings")
    s.add_argument("--seed", type=int, default=7)
    s.set_defaults(func=_simulate)
    e = sub.add_parser("evaluate", help="stream labelled CSVs through the agent's detector "
                       "and report precision/recall/F1/FAR/MAR, delays and plots")
    e.add_argument("bundle")
    e.add_argument("--data", action="append", required=True,
                   help="labelled CSV file, folder or glob (repeatable)")
    e.add_argument("--out", help="folder for summary.md, summary.json and one PNG per file")
    e.add_argument("--label-column", default="anomaly", help="0/1 label column (default anomaly)")
    e.add_argument("--float", action="store_true", help="also evaluate the float32 model")
    e.add_argument("--agent-config", help="edge-agent YAML whose detection/alerts settings to "
                   "use (default: the agent's defaults)")
    e.add_argument("--scored-from", type=int, default=0, help="score rows from this one on "
                   "(earlier rows are streamed: baseline, warm-up)")
    e.add_argument("--no-plots", action="store_true")
    e.set_defaults(func=_evaluate)
    b = sub.add_parser("benchmark", help="run SKAB's or NAB's protocol: train, evaluate int8 "
                       "and float, compare with published results")
    b.add_argument("suite", choices=["skab", "nab"])
    b.add_argument("--data-dir", required=True, help="the benchmark's data folder")
    b.add_argument("--labels", help="nab: combined_windows.json")
    b.add_argument("--out", help="results folder (default runs/<suite>)")
    b.add_argument("--config", help="trainer YAML (default configs/skab.yaml, configs/nab.yaml)")
    b.add_argument("--agent-config", help="edge-agent YAML whose detection/alerts settings to "
                   "use (default: the benchmark's)")
    b.add_argument("--epochs", type=int, help="replaces model.epochs")
    b.add_argument("--train", default="first-rows", choices=["first-rows", "anomaly-free",
                                                               "both"],
                   help="skab: what to train on (default: each experiment's first 400 rows)")
    b.add_argument("--subset", action="append", help="skab: only these folders (valve1, ...)")
    b.add_argument("--bundle", help="skab: evaluate this bundle instead of training one")
    b.add_argument("--model", default="per-file", choices=["per-file", "generic"],
                   help="nab: one model per file (default) or one for all")
    b.add_argument("--recalibrate", action="store_true", help="nab: with --bundles, calibrate "
                   "each bundle's scoring again with the config (into --out; no training)")
    b.add_argument("--half", choices=["even", "odd"], help="nab: only every other file (the "
                   "even or odd positions, from 0, in the windows file's order): choose "
                   "settings on one half, report on the other")
    b.add_argument("--bundles", help="nab: reuse the bundles of an earlier run "
                   "(<its --out>/bundles) instead of training")
    b.add_argument("--choose", metavar="KEY=V1,V2,...", help="nab, with --bundles: score "
                   "once per value of this trainer-config key (e.g. "
                   "scoring.level.rebase_after=null,150,300), then score each file with the "
                   "value the other files chose: a held-out figure for a setting only some "
                   "files can choose (ties: the first value)")
    b.add_argument("--threshold-scales", type=_scales, metavar="S1,S2,...", help="nab: also "
                   "score every file with its thresholds times each of these, and report the "
                   "best: one threshold for the corpus, chosen on it, as NAB's published "
                   "scores are (in-sample; the benchmark's own figure is multiplier 1)")
    b.add_argument("--jobs", type=int, default=2, help="nab: training processes")
    b.add_argument("--json", action="store_true", help="print the summary as JSON on stdout "
                   "(progress goes to stderr)")
    b.add_argument("--no-plots", action="store_true")
    b.set_defaults(func=_benchmark)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_cli("edge-trainer", lambda: args.func(args), error_exit=2)


if __name__ == "__main__":
    sys.exit(main())
