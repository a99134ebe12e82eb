"""Static findings of kafka.security_protocol, kafka.sasl_* and kafka.ssl.* (no services)."""

from __future__ import annotations

import pytest

from veltrix_ray.config import load_config, to_settings
from veltrix_ray.config.mask import masked_yaml
from veltrix_ray.config.validate import kafka_security_findings
from veltrix_ray.errors import ConfigError

pytestmark = pytest.mark.unit


def _findings(*overrides: str) -> set[tuple[str, str]]:
    settings = to_settings(load_config(["kafka.topic=t", *overrides]))
    return {(f.level, f.key) for f in kafka_security_findings(settings.kafka)}


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELTRIX_KAFKA_USERNAME", "alice")
    monkeypatch.setenv("VELTRIX_KAFKA_PASSWORD", "pw")


@pytest.mark.usefixtures("credentials")
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_with_a_scram_mechanism_and_credentials_is_valid(protocol: str,
                                                              mechanism: str) -> None:
    assert _findings(f"kafka.security_protocol={protocol}",
                     f"kafka.sasl_mechanism={mechanism}") == set()


@pytest.mark.parametrize(("overrides", "expected"), [
    (["kafka.security_protocol=SASL_SSL"], {("error", "kafka.sasl_mechanism"),
                                           ("error", "kafka.sasl_username"),
                                           ("error", "kafka.sasl_password")}),
    (["kafka.sasl_mechanism=PLAIN"], {("error", "kafka.sasl_mechanism")}),
    (["kafka.ssl.cafile=/ca.pem"], {("warning", "kafka.ssl.cafile")}),
    (["kafka.security_protocol=SSL", "kafka.ssl.keyfile=/k.pem"],
     {("error", "kafka.ssl.certfile")}),
])
def test_mistakes_name_the_key(overrides: list[str], expected: set[tuple[str, str]],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VELTRIX_KAFKA_USERNAME", "VELTRIX_KAFKA_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert _findings(*overrides) == expected


@pytest.mark.usefixtures("credentials")
def test_an_unknown_protocol_or_mechanism_fails_at_compose_time_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"'TLS', expected one of \[PLAINTEXT, SSL, "
                                          r"SASL_PLAINTEXT, SASL_SSL\]\n *full_key: "
                                          r"kafka\.security_protocol"):
        _findings("kafka.security_protocol=TLS")
    with pytest.raises(ConfigError, match=r"'GSSAPI', expected one of \[PLAIN, SCRAM-SHA-256, "
                                          r"SCRAM-SHA-512\]\n *full_key: kafka\.sasl_mechanism"):
        _findings("kafka.security_protocol=SASL_SSL", "kafka.sasl_mechanism=GSSAPI")


@pytest.mark.usefixtures("credentials")
def test_plain_in_the_clear_is_a_warning() -> None:
    assert _findings("kafka.security_protocol=SASL_PLAINTEXT", "kafka.sasl_mechanism=PLAIN") == {
        ("warning", "kafka.security_protocol")}


def test_the_key_password_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELTRIX_KAFKA_SSL_KEY_PASSWORD", "k3y-s3cret")
    shown = masked_yaml(load_config(["kafka.topic=t", "kafka.security_protocol=SSL"]))
    assert "k3y-s3cret" not in shown and "password: '****'" in shown
