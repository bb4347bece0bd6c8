"""``edge-agent``: run the daemon, check a config, and more (see ``edge-agent --help``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import EdgeError


def _run(args: argparse.Namespace) -> int:
    from . import config as agent_config
    from . import logs
    from .app import Agent

    config = agent_config.load(args.config)
    logs.setup(config.logging.level)
    agent = Agent(config)
    agent.install_signal_handlers()
    return agent.run()


def _check(args: argparse.Namespace) -> int:
    from . import config as agent_config
    from .check import check

    config = agent_config.load(args.config)
    print(check(config, args.config))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the agent (the systemd service runs this)")
    r.add_argument("--config", required=True, help="agent YAML (see configs/agent.yaml)")
    r.set_defaults(func=_run)
    c = sub.add_parser("check", help="validate the config and the bundle, then exit 0/1")
    c.add_argument("--config", required=True)
    c.set_defaults(func=_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EdgeError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
