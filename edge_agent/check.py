"""``edge-agent check``: everything start-up would verify, without connecting to the broker.

The config is validated, the bundle's files are checked against their sha256, the model is
loaded in the runtime and compared with its manifest, and the password source is read (but
never shown). The summary names where secrets come from, not what they are.
"""

from __future__ import annotations

from pathlib import Path

from .bundle import load_bundle
from .config import AgentConfig, read_secret
from .detector import parts_note
from .model import StatefulModel, load_runtime
from .topics import TopicMapper


def check(config: AgentConfig, path: str | Path) -> str:
    bundle = load_bundle(config.bundle)
    runtime = load_runtime(None if config.runtime == "auto" else config.runtime)
    StatefulModel(bundle.model_path, bundle.manifest.model, runtime)
    broker = config.broker
    secret = read_secret(broker)
    if broker.password_file:
        password = f"from file {broker.password_file} ({'read' if secret else 'empty'})"
    elif broker.password_env:
        password = f"from ${broker.password_env}"
    else:
        password = "none"
    scheme = "mqtts" if broker.tls.enabled else "mqtt"
    m = bundle.manifest
    lines = [
        f"config {path}: OK",
        f"agent id: {config.agent_id}; client id {config.client_id}",
        f"broker: {scheme}://{broker.host}:{broker.port} MQTT {broker.protocol}, "
        f"{broker.session} session; user {broker.username or 'none'}; password {password}",
        f"subscriptions (QoS {config.input.qos}): "
        + ", ".join(TopicMapper(config.input.topics, config.input.share_group).subscriptions()),
        f"bundle: {m.name} ({bundle.path}) sha256 {m.model.sha256}: OK",
        f"runtime: {runtime.describe()}",
        f"features: {', '.join(m.features)}; "
        f"{parts_note(m.scoring, config.detection.seasonal_timezone)}",
        f"output: {config.output.prefix}/alerts/<stream> (QoS {config.output.qos})",
    ]
    return "\n".join(lines)
