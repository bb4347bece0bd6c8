"""``edge-agent``: run the daemon, check a config, and more (see ``edge-agent --help``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import EdgeError, run_cli


def _run(args: argparse.Namespace) -> int:
    from . import config as agent_config
    from . import logs
    from .app import Agent
    from .signals import Requests

    requests = Requests().install()  # first: a stop during start-up is kept, not fatal
    config = agent_config.load(args.config)
    logs.setup(config.logging.level)
    return Agent(config, requests=requests).run()


def _check(args: argparse.Namespace) -> int:
    from . import config as agent_config
    from .check import check

    config = agent_config.load(args.config)
    print(check(config, args.config))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(args.duration, _speed(args.speed), args.broker, args.summary_json,
               args.embedded_broker)


def _watch(args: argparse.Namespace) -> int:
    from .watch import run, use_color

    return run(args.config, args.broker, args.prefix, stats=args.stats, count=args.count,
               timeout=args.timeout, color=use_color() and not args.no_color)


def _speed(text: str) -> float:
    value = float(text.rstrip("xX"))
    if value <= 0:
        raise argparse.ArgumentTypeError("speed must be positive")
    return value


def _replay(args: argparse.Namespace) -> int:
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from .bundle import load_bundle
    from .csvdata import CsvSpec, read_csv
    from .mqtt import wait_published
    from .replay import Feed, Progress, play, select_features, topics_for

    if (args.rate is None) == (args.speed is None):
        raise EdgeError("give --rate N (readings per second per file) or --speed Nx "
                        "(the files' own timestamps, N times faster)")
    spec = CsvSpec(separator=args.separator, timestamp_column=args.timestamp_column,
                   nan_policy=args.nan_policy, min_rows=1)
    renames = dict(item.split("=", 1) for item in args.rename or [])
    topics = topics_for(args.files, args.topic)
    recordings = []
    for path in args.files:
        rec = read_csv(path, spec)
        rec.features = [renames.get(name, name) for name in rec.features]
        if args.bundle:
            rec = select_features(rec, load_bundle(args.bundle).manifest.features)
        recordings.append(rec)
    feeds = [Feed(topic, rec, rec.features) for topic, rec in zip(topics, recordings)]
    host, _, port = args.broker.rpartition(":")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-replay-{__import__('os').getpid()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    try:
        client.connect(host or "127.0.0.1", int(port))
    except OSError as exc:
        raise EdgeError(f"cannot connect to the broker at {args.broker}: {exc}") from None
    client.loop_start()
    last: list[paho.MQTTMessageInfo] = []

    def publish(topic: str, payload: bytes) -> None:
        info = client.publish(topic, payload, qos=args.qos)
        last[:] = [info]

    stop = threading.Event()
    total = sum(len(r) for r in recordings)
    print(f"replaying {total} readings from {len(feeds)} file(s) to {args.broker}: "
          + ", ".join(f.topic for f in feeds), file=sys.stderr)
    try:
        sent = play(publish, feeds, rate=args.rate,
                    speed=None if args.speed is None else _speed(args.speed), stop=stop,
                    progress=Progress(total))
    except KeyboardInterrupt:
        stop.set()
        sent = -1
    if last:
        wait_published(last[0], 30)
    client.loop_stop()
    client.disconnect()
    return 0 if sent == total else 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the agent (the systemd service runs this)")
    r.add_argument("--config", required=True, help="agent YAML (see configs/agent.yaml)")
    r.set_defaults(func=_run)
    c = sub.add_parser("check", help="validate the config and the bundle, then exit 0/1")
    c.add_argument("--config", required=True)
    c.set_defaults(func=_check)
    d = sub.add_parser("demo", help="simulated robots, a real broker and the real agent, live")
    d.add_argument("--duration", type=float, default=60.0, help="wall-clock seconds (60)")
    d.add_argument("--speed", default="5", help="simulated seconds per second, e.g. 5 or 5x")
    d.add_argument("--broker", help="host:port of an MQTT broker to use instead of starting "
                   "one")
    d.add_argument("--embedded-broker", action="store_true", help="use the embedded Python "
                   "broker even when mosquitto is installed")
    d.add_argument("--summary-json", help="also write the summary to this file")
    d.set_defaults(func=_demo)
    rp = sub.add_parser("replay", help="publish CSV recordings as MQTT streams")
    rp.add_argument("files", nargs="+", help="CSV files (one stream each)")
    rp.add_argument("--broker", default="127.0.0.1:1883", help="host:port (127.0.0.1:1883)")
    rp.add_argument("--topic", action="append", required=True, help="topic per file, or one "
                    "topic with {stem} for all (e.g. robots/{stem}/joints/j1/telemetry)")
    rp.add_argument("--rate", type=float, help="readings per second per file")
    rp.add_argument("--speed", help="play the files' timestamps N times faster, e.g. 10x")
    rp.add_argument("--qos", type=int, choices=(0, 1), default=1)
    rp.add_argument("--bundle", help="send exactly this bundle's features, in its order")
    rp.add_argument("--rename", action="append", help="column=feature (repeatable)")
    rp.add_argument("--separator", help="CSV separator (default: detected)")
    rp.add_argument("--timestamp-column", default="auto")
    rp.add_argument("--nan-policy", choices=("drop", "ffill", "fail"), default="fail")
    rp.set_defaults(func=_replay)
    w = sub.add_parser("watch", help="print the agents' alerts, stream statuses and "
                       "availability as they are published")
    w.add_argument("--config", help="agent YAML: connect as the agent does (TLS, user name, "
                   "password) and use its topic prefix")
    w.add_argument("--broker", help="host:port (default: the config's, or 127.0.0.1:1883)")
    w.add_argument("--prefix", help="topic prefix (default: the config's output.prefix, or "
                   "edge-anomaly)")
    w.add_argument("--stats", action="store_true", help="also print each agent's stats")
    w.add_argument("--count", type=int, help="exit 0 after this many alert events")
    w.add_argument("--timeout", type=float, help="stop after this many seconds (exit 1 if "
                   "--count was not reached)")
    w.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    w.set_defaults(func=_watch)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_cli("edge-agent", lambda: args.func(args), error_exit=1)


if __name__ == "__main__":
    sys.exit(main())
