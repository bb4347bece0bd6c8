"""``edge-trainer``: train, inspect and simulate (see ``edge-trainer --help``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from edge_agent.errors import EdgeError


def _train(args: argparse.Namespace) -> int:
    from . import config as trainer_config
    from .train import run

    config = trainer_config.load(args.config)
    data = config.data
    if args.data:
        data = data.model_copy(update={"paths": [str(Path(p)) for p in args.data]})
    output = config.output
    if args.out:
        output = output.model_copy(update={"dir": str(Path(args.out))})
    if args.name:
        output = output.model_copy(update={"name": args.name})
    model = config.model
    if args.epochs:
        model = model.model_copy(update={"epochs": args.epochs})
    run(config.model_copy(update={"data": data, "output": output, "model": model}))
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EdgeError as exc:
        print(f"edge-trainer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge-trainer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
