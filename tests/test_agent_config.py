"""Agent config and ``edge-agent check``: errors name file and key path; secrets never shown."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from edge_agent.__main__ import main
from edge_agent.config import load

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


BASE = {"bundle": str(ROOT / "edge_agent" / "demo_bundle"),
        "input": {"topics": ["robots/{robot}/joints/{joint}/telemetry"]}}


def test_shipped_config_is_valid_and_checks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(ROOT / "configs" / "agent.yaml")]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "robots/+/joints/+/telemetry" in out and "ai-edge-litert" in out


@pytest.mark.parametrize("change, message", [
    ({"brokr": {}}, "brokr: unknown key"),
    ({"broker": {"port": 99999}}, "broker.port: Input should be less than or equal to 65535"),
    ({"broker": {"tls": {"cert_file": "c.pem"}}}, "broker.tls: Value error, cert_file and "
                                                  "key_file go together"),
    ({"input": {"topics": ["a/+/b"]}}, "input.topics.0.pattern: Value error, topic pattern"),
    ({"input": {"topics": []}}, "input.topics: List should have at least 1 item"),
    ({"queue": {"policy": "drop_random"}}, "queue.policy: Input should be 'drop_oldest' or "
                                           "'drop_newest'"),
    ({"alerts": {"exit_readings": 0}}, "alerts.exit_readings: Input should be greater than or "
                                       "equal to 1"),
    ({"detection": {"seasonal_timezone": "Mars/Olympus"}},
     "detection.seasonal_timezone: Value error, unknown time zone 'Mars/Olympus'"),
])
def test_bad_config_names_file_and_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            change: dict, message: str) -> None:
    config = {**BASE, **change}
    path = write(tmp_path, config)
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: {message}" in err


def test_check_names_a_seasonal_clock_the_bundle_cannot_use(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo bundle has no seasonal part: a zone set for it is reported unused, not
    silently dropped."""
    path = write(tmp_path, {**BASE, "detection": {"seasonal_timezone": "Europe/Berlin"}})
    assert main(["check", "--config", str(path)]) == 0
    assert "no seasonal part (detection.seasonal_timezone unused)" in capsys.readouterr().out


def test_missing_bundle_and_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {**BASE, "bundle": "nowhere"})
    assert main(["check", "--config", str(path)]) == 1
    assert f"{tmp_path / 'nowhere'}: bundle folder not found" in capsys.readouterr().err
    path.write_text("broker:\n  host: [unclosed\n")
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and "not valid YAML" in err


def test_secrets_are_read_but_never_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cr3t-value\n")
    path = write(tmp_path, {**BASE, "broker": {"username": "edge",
                                               "password_file": str(secret)}})
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s3cr3t-value" not in out and f"from file {secret}" in out
    monkeypatch.setenv("EDGE_TEST_PW", "env-s3cr3t")
    path = write(tmp_path, {**BASE, "broker": {"username": "edge", "password_env": "EDGE_TEST_PW"}})
    assert main(["check", "--config", str(path)]) == 0
    assert "env-s3cr3t" not in capsys.readouterr().out
    monkeypatch.delenv("EDGE_TEST_PW")
    assert main(["check", "--config", str(path)]) == 1
    assert "broker.password_env: environment variable EDGE_TEST_PW is not set" in \
        capsys.readouterr().err


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "edge_agent" / "demo_bundle", tmp_path / "b")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/edge-agent.service")
    path = write(tmp_path, {**BASE, "bundle": "b", "broker": {
        "password_file": "${CREDENTIALS_DIRECTORY}/mqtt-password"}})
    config = load(path)
    assert config.bundle == str(tmp_path / "b")
    assert config.broker.password_file == "/run/credentials/edge-agent.service/mqtt-password"


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is generated from the schemas; regenerate it when they change:
    python -m edge_agent.configdoc > docs/configuration.md"""
    from edge_agent.configdoc import render

    assert (ROOT / "docs" / "configuration.md").read_text() == render()


def test_configuration_reference_lists_every_key() -> None:
    from edge_agent.config import AgentConfig
    from edge_agent.configdoc import rows

    paths = {row[0] for row in rows(AgentConfig)}
    for key in ("broker.tls.check_hostname", "input.topics[].pattern", "queue.policy",
                "alerts.cooldown_readings", "output.scores", "detection.gap_reset_s"):
        assert key in paths
