"""An embedded MQTT broker (amqtt) for the demo on machines without mosquitto.

Run as its own process (``python -m edge_agent.embedded_broker --port N``) so the demo stops it
by pid like any other broker. amqtt speaks MQTT 3.1.1, so the demo's agent uses 3.1.1 with it.
Needs the ``demo`` extra (``pip install '.[demo]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal


async def serve(host: str, port: int) -> None:
    try:
        from amqtt.broker import Broker
    except ImportError as exc:  # pragma: no cover - exercised only without the demo extra
        raise SystemExit(f"the embedded broker needs amqtt: pip install '.[demo]' ({exc})")
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"embedded MQTT broker listening on {host}:{port}", flush=True)
    await stop.wait()
    await broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
