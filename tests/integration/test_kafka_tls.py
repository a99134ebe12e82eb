"""Kafka over TLS and SASL: a broker with SSL (mutual TLS) and SASL_SSL (SCRAM) listeners and a
CA made at test time; pipelines end exact over both, and `check` names the key of each mistake."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from omegaconf import DictConfig

from veltrix_ray import Pipeline, cli, load_config
from veltrix_ray.check import run_checks
from veltrix_ray.config import to_settings
from veltrix_ray.errors import StackError, VeltrixError
from veltrix_ray.local.kafka import KafkaBroker, SecureListeners
from veltrix_ray.local.procs import HOST, free_port

from .helpers import Expected, assert_exact, fill, overrides

USER, PASSWORD = "veltrix", "scram-Secret-7f3a"
KEY_PASSWORD = "key-Secret-91c2"


@dataclass(frozen=True)
class TlsKafka:
    broker: KafkaBroker
    cafile: Path
    certfile: Path  # a client certificate the SSL listener accepts
    keyfile: Path  # its key, encrypted with KEY_PASSWORD
    wrong_cafile: Path  # a CA that signed nothing of this broker

    @property
    def ssl(self) -> str:
        assert self.broker.secure is not None
        return f"{HOST}:{self.broker.secure.ssl_port}"

    @property
    def sasl_ssl(self) -> str:
        assert self.broker.secure is not None
        return f"{HOST}:{self.broker.secure.sasl_ssl_port}"


def _pkcs8(pem: bytes, password: str | None = None) -> bytes:
    """Kafka's PEM keystore reads PKCS#8 only (trustme writes the traditional form)."""
    key = serialization.load_pem_private_key(pem, password=None)
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption() if password is None
        else serialization.BestAvailableEncryption(password.encode()))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


@pytest.fixture(scope="module")
def tls_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsKafka]:
    home = tmp_path_factory.mktemp("tls-kafka")
    ca = trustme.CA()
    # an IP address only: reaching the broker as "localhost" is a hostname mismatch
    server = ca.issue_cert(HOST)
    client = ca.issue_cert("veltrix-client")
    files = {
        "keystore.pem": _pkcs8(server.private_key_pem.bytes())
        + b"".join(c.bytes() for c in server.cert_chain_pems),
        "ca.pem": ca.cert_pem.bytes(),
        "client.pem": client.cert_chain_pems[0].bytes(),
        "client.key": _pkcs8(client.private_key_pem.bytes(), KEY_PASSWORD),
        "other-ca.pem": trustme.CA().cert_pem.bytes(),
    }
    for name, data in files.items():
        (home / name).write_bytes(data)
    secure = SecureListeners(free_port(), free_port(), home / "keystore.pem", home / "ca.pem",
                             {USER: PASSWORD})
    broker = KafkaBroker(home / "broker", free_port(), free_port(), secure)
    try:
        try:
            broker.start()
        except StackError as exc:
            pytest.fail(f"the TLS Kafka broker did not start: {exc}", pytrace=False)
        yield TlsKafka(broker, home / "ca.pem", home / "client.pem", home / "client.key",
                       home / "other-ca.pem")
    finally:
        broker.stop()


@pytest.fixture
def sasl_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELTRIX_KAFKA_USERNAME", USER)
    monkeypatch.setenv("VELTRIX_KAFKA_PASSWORD", PASSWORD)


def _topic(tls: TlsKafka, events: int = 3_000, partitions: int = 4) -> tuple[str, Expected]:
    topic = f"tls-{uuid.uuid4().hex[:10]}"
    # written over the plaintext listener: the producer is not what is under test here
    return topic, fill(tls.broker.bootstrap, topic, events, partitions, bad_fraction=0.01)


def _ssl(tls: TlsKafka) -> list[str]:
    return [f"kafka.bootstrap={tls.ssl}", "kafka.security_protocol=SSL",
            f"kafka.ssl.cafile={tls.cafile}", f"kafka.ssl.certfile={tls.certfile}",
            f"kafka.ssl.keyfile={tls.keyfile}"]


def _sasl_ssl(tls: TlsKafka, bootstrap: str | None = None) -> list[str]:
    return [f"kafka.bootstrap={bootstrap or tls.sasl_ssl}", "kafka.security_protocol=SASL_SSL",
            "kafka.sasl_mechanism=SCRAM-SHA-512", f"kafka.ssl.cafile={tls.cafile}"]


def _kafka_findings(cfg: DictConfig) -> list[tuple[str, str]]:
    return [(f.level, f.key) for f in run_checks(to_settings(cfg)) if f.key.startswith("kafka")]


@pytest.mark.usefixtures("ray_local")
def test_pipeline_over_ssl_with_a_client_certificate_is_exact(
        tls_kafka: TlsKafka, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELTRIX_KAFKA_SSL_KEY_PASSWORD", KEY_PASSWORD)
    topic, exp = _topic(tls_kafka)
    cfg = load_config(overrides(topic, pg_dsn, *_ssl(tls_kafka), "topology.workers=2"))
    assert _kafka_findings(cfg) == [("ok", "kafka")]
    Pipeline(cfg).run()
    assert_exact(pg_dsn, topic, exp)


@pytest.mark.usefixtures("ray_local", "sasl_env")
def test_pipeline_over_sasl_ssl_with_scram_sha_512_is_exact(tls_kafka: TlsKafka,
                                                            pg_dsn: str) -> None:
    topic, exp = _topic(tls_kafka)
    cfg = load_config(overrides(topic, pg_dsn, *_sasl_ssl(tls_kafka), "topology.workers=2"))
    assert _kafka_findings(cfg) == [("ok", "kafka")]
    Pipeline(cfg).run()
    assert_exact(pg_dsn, topic, exp)


WRONG = "wrong-Secret-5d1e"
MISTAKES = ("wrong password", "wrong CA", "hostname mismatch", "missing CA file",
            "no client certificate", "wrong key password")


def _mistake(tls: TlsKafka, mistake: str) -> tuple[str, list[str], dict[str, str]]:
    """The key `check` must name, the overrides and the environment that make the mistake."""
    sasl, ssl = _sasl_ssl(tls), _ssl(tls)
    return {
        "wrong password": ("kafka.sasl_password", sasl, {"VELTRIX_KAFKA_PASSWORD": WRONG}),
        "wrong CA": ("kafka.ssl.cafile", [*sasl, f"kafka.ssl.cafile={tls.wrong_cafile}"], {}),
        "hostname mismatch": ("kafka.ssl.check_hostname",
                              _sasl_ssl(tls, tls.sasl_ssl.replace(HOST, "localhost")), {}),
        "missing CA file": ("kafka.ssl.cafile", [*ssl, "kafka.ssl.cafile=/nonexistent/ca.pem"],
                            {}),
        "no client certificate": ("kafka.ssl.certfile", ssl[:3], {}),
        "wrong key password": ("kafka.ssl.password", ssl,
                               {"VELTRIX_KAFKA_SSL_KEY_PASSWORD": WRONG}),
    }[mistake]


@pytest.mark.parametrize("mistake", MISTAKES)
def test_check_names_the_key_of_each_mistake(mistake: str, tls_kafka: TlsKafka,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    key, argv, env = _mistake(tls_kafka, mistake)
    for name, value in {"VELTRIX_KAFKA_USERNAME": USER, "VELTRIX_KAFKA_PASSWORD": PASSWORD,
                        "VELTRIX_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD, **env}.items():
        monkeypatch.setenv(name, value)
    code = cli.main(["check", "kafka.topic=absent", *argv])
    out = capsys.readouterr()
    printed = out.out + out.err
    assert code == 1
    assert f"error   {key}: " in printed, printed
    assert "Traceback" not in printed
    for secret in (WRONG, PASSWORD, KEY_PASSWORD):
        assert secret not in printed


@pytest.mark.usefixtures("sasl_env")
def test_check_hostname_off_accepts_a_certificate_for_another_name(tls_kafka: TlsKafka,
                                                                   pg_dsn: str) -> None:
    localhost = tls_kafka.sasl_ssl.replace(HOST, "localhost")
    cfg = load_config(overrides("absent", pg_dsn, *_sasl_ssl(tls_kafka, localhost),
                                "kafka.ssl.check_hostname=false"))
    # the broker was reached and authenticated: only the topic is missing
    assert _kafka_findings(cfg) == [("error", "kafka.topic")]


@pytest.mark.usefixtures("ray_local")
def test_a_run_refused_by_the_broker_fails_at_once_naming_the_key(
        tls_kafka: TlsKafka, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELTRIX_KAFKA_USERNAME", USER)
    monkeypatch.setenv("VELTRIX_KAFKA_PASSWORD", WRONG)
    cfg = load_config(overrides("absent", pg_dsn, *_sasl_ssl(tls_kafka)))
    started = time.monotonic()
    with pytest.raises(VeltrixError) as failed:
        Pipeline(cfg).run()
    assert time.monotonic() - started < cfg.kafka.connect_timeout_s  # nothing waited for
    assert "kafka.sasl_password" in str(failed.value) and WRONG not in str(failed.value)
