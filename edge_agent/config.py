"""The agent's configuration (``configs/agent.yaml``): one validated model per section.

Unknown keys are rejected and every error names the file and the key path, so a typo stops
start-up instead of being silently ignored. Secrets (the MQTT password) are never in this file:
it names a file (for example a systemd credential) or an environment variable holding them, and
:func:`read_secret` reads it at connect time; nothing here is ever logged with a secret in it.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .bundle import TimeZoneName
from .configfile import Section, load_config
from .errors import ConfigError

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TlsConfig(Section):
    """TLS to the broker. The broker's certificate is always verified against ``ca_file`` (or
    the system's CAs); ``check_hostname: false`` only skips the name check (for brokers
    addressed by IP with a certificate naming a host)."""

    enabled: bool = Field(False, description="Connect with TLS.")
    ca_file: str | None = Field(None, description="CA bundle that signed the broker's "
                                "certificate; null: the system's CAs.")
    cert_file: str | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: str | None = Field(None, description="Client private key (mutual TLS).")
    check_hostname: bool = Field(True, description="Check the certificate names the host.")

    @model_validator(mode="after")
    def _pair(self) -> "TlsConfig":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class BrokerConfig(Section):
    """The MQTT broker connection: address, session, credentials, TLS, reconnect backoff."""

    host: str = Field("127.0.0.1", description="MQTT broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port.")
    client_id: str | None = Field(None, description="MQTT client id; null: "
                                  "'edge-agent-<agent_id>'. Keep it stable: the persistent "
                                  "session is tied to it.")
    keepalive_s: int = Field(30, ge=5, le=65535, description="MQTT keepalive interval.")
    protocol: Literal["3.1.1", "5"] = Field("3.1.1", description=(
        "MQTT protocol version. Both run at the same speed (the agent takes readings apart "
        "itself and skips MQTT 5 properties; docs/benchmarks.md); persistent sessions and "
        "shared subscriptions work with both on mosquitto."))
    session: Literal["persistent", "clean"] = Field("persistent", description=(
        "persistent: the broker keeps subscriptions and queues QoS 1 readings while the agent "
        "is away; clean: start afresh at every connection."))
    session_expiry_s: int = Field(86400, ge=0, description="MQTT 5: how long the broker keeps "
                                  "a persistent session after the agent disconnects.")
    username: str | None = Field(None, description="MQTT user name.")
    password_file: str | None = Field(None, description=(
        "File holding the MQTT password (e.g. ${CREDENTIALS_DIRECTORY}/mqtt-password)."))
    password_env: str | None = Field(None, description="Environment variable holding the "
                                     "MQTT password.")
    tls: TlsConfig = Field(default_factory=TlsConfig)
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay.")
    reconnect_max_s: float = Field(60.0, gt=0, description="Longest reconnect delay "
                                   "(the delay doubles up to this).")

    @model_validator(mode="after")
    def _one_password_source(self) -> "BrokerConfig":
        if self.password_file and self.password_env:
            raise ValueError("give password_file or password_env, not both")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self


class TopicConfig(Section):
    """One input topic pattern and how its placeholders make the stream id."""

    pattern: str = Field(description="Topic with {name} placeholders, one topic level each, "
                         "e.g. robots/{robot}/joints/{joint}/telemetry.")
    stream_id: str | None = Field(None, description="Stream id template from the "
                                  "placeholders; null: their values joined by '/'.")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        levels = value.split("/")
        if not value or any(level == "" for level in levels):
            raise ValueError(f"topic pattern {value!r} has an empty level")
        if "+" in value or "#" in value:
            raise ValueError(f"topic pattern {value!r}: use {{name}} placeholders, not + or #")
        names = _PLACEHOLDER.findall(value)
        if len(names) != len(set(names)):
            raise ValueError(f"topic pattern {value!r} repeats a placeholder")
        for level in levels:
            if "{" in level and not _PLACEHOLDER.fullmatch(level):
                raise ValueError(f"topic pattern {value!r}: a placeholder must be a whole "
                                 f"level, found {level!r}")
        return value

    @model_validator(mode="after")
    def _template(self) -> "TopicConfig":
        if self.stream_id is not None:
            unknown = set(_PLACEHOLDER.findall(self.stream_id)) - set(
                _PLACEHOLDER.findall(self.pattern))
            if unknown:
                raise ValueError(f"stream_id uses {sorted(unknown)}, which the pattern "
                                 "does not define")
        return self


class PayloadConfig(Section):
    """How reading payloads are read (JSON object by feature name, or array in feature order)."""

    max_bytes: int = Field(4096, ge=16, description="Larger payloads are rejected unread.")
    timestamp_field: str | None = Field("ts", description="Optional field with the reading's "
                                        "time (ISO 8601 or epoch s/ms); null: arrival time.")
    fields: dict[str, str] = Field(default_factory=dict, description=(
        "Renames: payload field name -> model feature name."))
    ignore_fields: list[str] = Field(default_factory=list, description=(
        "Extra payload fields to accept and ignore (others are rejected as extra_field)."))


class InputConfig(Section):
    """Where readings come from: topic patterns, QoS, shared subscriptions, payload format."""

    topics: list[TopicConfig] = Field(min_length=1, description="Where readings arrive.")
    qos: Literal[0, 1] = Field(1, description="Subscription QoS (1: nothing lost in transit).")
    share_group: str | None = Field(None, description=(
        "MQTT 5 shared subscription group: agents in one group split the streams."))
    payload: PayloadConfig = Field(default_factory=PayloadConfig)

    @field_validator("topics", mode="before")
    @classmethod
    def _strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"pattern": v} if isinstance(v, str) else v for v in value]
        return value


class OutputConfig(Section):
    """What the agent publishes: alerts, retained stream status, scores, stats."""

    prefix: str = Field("edge-anomaly", description="Topic prefix of everything published.")
    qos: Literal[0, 1] = Field(1, description="QoS of alerts.")
    scores: bool = Field(False, description="Publish every reading's score to "
                         "{prefix}/streams/{stream}/score (for live charts): ts, score, the "
                         "enter threshold, status and lifted_by.")
    score_interval_s: float = Field(0.0, ge=0, description="With scores: at most one score "
                                    "message per stream this often (reading time; 0: every "
                                    "reading).")
    stats_interval_s: float = Field(60.0, gt=0, description="Publish counters to "
                                    "{prefix}/agents/{agent_id}/stats (retained) this often.")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or value.startswith("/") or value.endswith("/") or "+" in value \
                or "#" in value:
            raise ValueError(f"prefix {value!r} must be a topic without wildcards or "
                             "leading/trailing '/'")
        return value


class DetectionConfig(Section):
    """Agent-side detection settings (the model-side ones come from the bundle)."""

    warmup_readings: int = Field(20, ge=0, description="Readings not scored after a stream "
                                 "starts or resets.")
    gap_reset_s: float | None = Field(60.0, gt=0, description="A longer silence resets the "
                                      "stream's state (null: never).")
    threshold_scale: float = Field(1.0, gt=0, description="Multiplies the bundle's "
                                   "thresholds (above 1: fewer, surer alerts).")
    seasonal_timezone: TimeZoneName | None = Field(None, description=(
        "IANA time zone (e.g. Europe/Berlin) whose local clock the seasonal slots follow here, "
        "over the bundle's scoring.seasonal.timezone (profiles are learned on the device, so "
        "a model trained on another site's clock serves this one). null: the bundle's clock. "
        "Only bundles with a seasonal part have slots."))
    max_streams: int = Field(10000, ge=1, description="Readings of further streams are "
                             "rejected (too_many_streams).")
    stream_expiry_s: float | None = Field(None, gt=0, description=(
        "Forget a stream silent this long (wall time): its state, retained status and Home "
        "Assistant entities go (null: never)."))


class AlertsConfig(Section):
    """Alert episodes: hysteresis, update rate and cooldown (in readings of the stream)."""

    enter_readings: int = Field(3, ge=1, description="Readings at or above the enter "
                                "threshold that start an episode.")
    exit_readings: int = Field(10, ge=1, description="Readings below the exit threshold that "
                               "end it.")
    update_interval_s: float = Field(10.0, ge=0, description="Least reading time between "
                                     "two updates (sent only for a new peak).")
    cooldown_readings: int = Field(20, ge=0, description="Readings after an end before a new "
                                   "episode may start.")


class QueueConfig(Section):
    """The bounded queue between the MQTT network thread and the worker."""

    max_size: int = Field(10000, ge=1, description="Readings waiting for the worker.")
    policy: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest", description="What a full queue drops.")


class StateConfig(Section):
    """Where the agent keeps what must survive a restart: stream snapshots and the alert outbox."""

    dir: str | None = Field(None, description=(
        "State folder; null: $STATE_DIRECTORY (systemd StateDirectory=) if set, else "
        "~/.local/state/edge-agent/<agent_id>."))
    snapshot_interval_s: float = Field(30.0, gt=0, description=(
        "Snapshot every stream's state this often (and at shutdown)."))
    outbox_max_alerts: int = Field(10000, ge=10, description=(
        "Alerts kept until the broker acknowledges them; when full, the oldest updates go "
        "first."))


class HomeAssistantConfig(Section):
    """Home Assistant MQTT discovery: per stream a problem binary_sensor and a score sensor,
    grouped under one device per agent, available while the agent is online."""

    discovery_prefix: str | None = Field(None, description=(
        "HA's discovery prefix (usually 'homeassistant'); null: no discovery."))
    enabled: bool = Field(True, description="Announce entities when a prefix is set.")
    score_interval_s: float = Field(5.0, ge=0, description=(
        "Publish each stream's score for the score sensor at most this often (reading time)."))
    remove_expired: bool = Field(True, description=(
        "Remove the entities of streams forgotten by detection.stream_expiry_s."))

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.discovery_prefix)


class MetricsConfig(Section):
    """An optional Prometheus endpoint (needs the 'metrics' extra: prometheus-client)."""

    enabled: bool = Field(False, description="Serve /metrics.")
    host: str = Field("127.0.0.1", description="Address to bind (localhost by default).")
    port: int = Field(9108, ge=1, le=65535, description="Port to bind.")


class LoggingConfig(Section):
    """Log level and rate limits (logs go to stderr, journald-friendly under systemd)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    reject_log_interval_s: float = Field(10.0, gt=0, description="At most one log line per "
                                         "reject reason in this interval (others counted).")


class AgentConfig(Section):
    agent_id: str = Field(default_factory=socket.gethostname, description="This agent's name "
                          "in topics and alerts; default: the host name.")
    bundle: str = Field(description="Model bundle folder (relative to this file).")
    bundle_watch_s: float | None = Field(10.0, gt=0, description=(
        "Check the bundle folder this often and reload the model when it changed "
        "(null: only on SIGHUP / systemctl reload)."))
    runtime: Literal["auto", "litert", "tflite"] = Field("auto", description="TFLite runtime.")
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    input: InputConfig
    output: OutputConfig = Field(default_factory=OutputConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("agent_id")
    @classmethod
    def _agent_id(cls, value: str) -> str:
        if not value or any(ch in value for ch in "/+#"):
            raise ValueError(f"agent_id {value!r} must be non-empty, without '/', '+' or '#'")
        return value

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"edge-agent-{self.agent_id}"

    @property
    def state_dir(self) -> Path:
        if self.state.dir:
            return Path(self.state.dir)
        if os.environ.get("STATE_DIRECTORY"):
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        return Path.home() / ".local" / "state" / "edge-agent" / self.agent_id


def _expand(path: str | None, base: Path) -> str | None:
    """Expand ``${VAR}`` and ``~``; resolve relative paths against the config's folder."""
    if path is None:
        return None
    expanded = Path(os.path.expanduser(os.path.expandvars(path)))
    return os.path.normpath(expanded if expanded.is_absolute() else base / expanded)


def load(path: str | Path) -> AgentConfig:
    """Read and validate an agent config; file paths in it resolve against its folder."""
    config = load_config(path, AgentConfig)
    base = Path(path).resolve().parent
    tls = config.broker.tls
    tls = tls.model_copy(update={k: _expand(getattr(tls, k), base)
                                 for k in ("ca_file", "cert_file", "key_file")})
    broker = config.broker.model_copy(update={
        "tls": tls, "password_file": _expand(config.broker.password_file, base)})
    state = config.state.model_copy(update={"dir": _expand(config.state.dir, base)})
    return config.model_copy(update={"bundle": _expand(config.bundle, base), "broker": broker,
                                     "state": state})


def read_secret(broker: BrokerConfig) -> str | None:
    """The MQTT password from its file or environment variable (never from the config)."""
    if broker.password_file:
        try:
            return Path(broker.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"broker.password_file: cannot read {broker.password_file}: "
                              f"{exc.strerror or exc}") from None
    if broker.password_env:
        value = os.environ.get(broker.password_env)
        if value is None:
            raise ConfigError(f"broker.password_env: environment variable "
                              f"{broker.password_env} is not set")
        return value
    return None
