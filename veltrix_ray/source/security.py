"""Kafka TLS and SASL: the SSL context built from kafka.ssl, and which key to change when a
secured connection fails.

aiokafka only logs why it could not bootstrap and raises "Unable to bootstrap"; `explain`
connects once more, directly, to learn the reason (an untrusted certificate, a hostname
mismatch, rejected credentials) and names the config key that fixes it."""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiokafka import errors
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.helpers import create_ssl_context

from veltrix_ray.errors import ConfigError

if TYPE_CHECKING:
    from veltrix_ray.config.schema import KafkaSslConfig

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, _EMAIL_MISMATCH and _IP_ADDRESS_MISMATCH
_NAME_MISMATCH = (62, 63, 64)
# the broker's TLS alerts when it refuses the client's certificate (or its absence)
_CLIENT_CERT_ALERTS = ("ALERT_BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "ALERT_UNKNOWN_CA")
# a Kafka frame length that is really a TLS record header: an alert or handshake, TLS 1.x
_TLS_RECORDS = (0x1503, 0x1603)
_CONN_OPTIONS = frozenset(inspect.signature(create_conn).parameters) - {"host", "port"}
_CREDENTIALS = "$VELTRIX_KAFKA_USERNAME / $VELTRIX_KAFKA_PASSWORD"
KEY_PASSWORD_ENV = "$VELTRIX_KAFKA_SSL_KEY_PASSWORD"


class KafkaSecurityError(ConfigError):
    """A Kafka connection failed for a reason a config key fixes: `key` names it, `reason`
    says why and how. Like every VeltrixError it can be re-made from its message alone."""

    def __init__(self, message: str, key: str = "kafka", reason: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason or message

    def __reduce__(self) -> tuple[type[KafkaSecurityError], tuple[str, str, str]]:
        return type(self), (str(self), self.key, self.reason)


def _refused(key: str, reason: str) -> KafkaSecurityError:
    return KafkaSecurityError(f"{key}: {reason}", key, reason)


def ssl_context(cfg: KafkaSslConfig) -> ssl.SSLContext:
    """A client context verifying the brokers against kafka.ssl.cafile (the system's CAs when
    null), presenting kafka.ssl.certfile when the brokers want a client certificate."""
    files = {"kafka.ssl.cafile": cfg.cafile, "kafka.ssl.certfile": cfg.certfile,
             "kafka.ssl.keyfile": cfg.keyfile}
    pems = {}
    for key, path in files.items():
        if path is not None:
            try:
                with open(path, "rb") as f:
                    pems[key] = f.read()
            except OSError as exc:
                raise _refused(key, f"cannot read {path} ({exc.strerror}): point it at a "
                                    "readable PEM file") from None
    # the private key may sit in the certificate file; without a password OpenSSL would
    # prompt for one on the terminal
    keyfile = cfg.keyfile or cfg.certfile
    encrypted = b"ENCRYPTED" in pems.get("kafka.ssl.keyfile", pems.get("kafka.ssl.certfile", b""))
    if encrypted and cfg.password is None:
        raise _refused("kafka.ssl.password",
                       f"the private key {keyfile} is encrypted: export {KEY_PASSWORD_ENV}")
    try:
        context = create_ssl_context(cafile=cfg.cafile, certfile=cfg.certfile,
                                     keyfile=cfg.keyfile, password=cfg.password)
    except ssl.SSLError as exc:
        raise _unloadable(cfg, exc, encrypted) from None
    context.check_hostname = cfg.check_hostname
    assert isinstance(context, ssl.SSLContext)  # aiokafka's helper is untyped
    return context


def _unloadable(cfg: KafkaSslConfig, exc: ssl.SSLError, encrypted: bool) -> KafkaSecurityError:
    """Which of the files (or the key's password) OpenSSL refused."""
    why = exc.reason or str(exc)
    try:
        create_ssl_context(cafile=cfg.cafile)
    except ssl.SSLError:
        return _refused("kafka.ssl.cafile",
                        f"{cfg.cafile} holds no usable PEM CA certificate ({why})")
    if encrypted and exc.reason != "KEY_VALUES_MISMATCH":
        return _refused("kafka.ssl.password",
                        f"cannot decrypt the private key {cfg.keyfile or cfg.certfile} ({why}): "
                        f"is {KEY_PASSWORD_ENV} its password?")
    return _refused("kafka.ssl.certfile",
                    f"cannot load the client certificate {cfg.certfile} with the key "
                    f"{cfg.keyfile or cfg.certfile} ({why}): give a PEM certificate and its "
                    "matching private key (kafka.ssl.keyfile)")


async def explain(bootstrap: str, options: Mapping[str, Any]) -> KafkaSecurityError | None:
    """Why the brokers in `bootstrap` refuse a connection with these client options, when a
    config key fixes it; None when they do not answer at all (or answer now)."""
    kwargs = {k: v for k, v in options.items() if k in _CONN_OPTIONS}
    for host, port, _ in collect_hosts(bootstrap, randomize=False):
        try:
            conn = await create_conn(host, port, **kwargs)
        except (OSError, errors.KafkaError, asyncio.TimeoutError) as exc:
            found = _named(exc, f"{host}:{port}", options)
            if found is not None:
                return found
            continue
        conn.close()
        return None
    return None


def _named(exc: BaseException, where: str, options: Mapping[str, Any]) -> KafkaSecurityError | None:
    if isinstance(exc, errors.KafkaConnectionError) and exc.__cause__ is not None:
        exc = exc.__cause__  # what closed the connection: a TLS alert, a short read
    if isinstance(exc, asyncio.IncompleteReadError) and (exc.expected or 0) >> 16 in _TLS_RECORDS:
        return _refused(
            "kafka.security_protocol",
            f"the listener at {where} speaks TLS: set kafka.security_protocol=SSL (or SASL_SSL)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in _NAME_MISMATCH:
            return _refused(
                "kafka.ssl.check_hostname",
                f"the certificate of the broker at {where} does not name that host "
                f"({exc.verify_message}): connect by a name the certificate holds "
                "(kafka.bootstrap), or, only where the network is trusted, set "
                "kafka.ssl.check_hostname=false")
        return _refused(
            "kafka.ssl.cafile",
            f"the certificate of the broker at {where} is not trusted ({exc.verify_message}): "
            "set kafka.ssl.cafile to the PEM file of the CA that signed it")
    if isinstance(exc, ssl.SSLError):
        if any(alert in str(exc) for alert in _CLIENT_CERT_ALERTS):
            return _refused(
                "kafka.ssl.certfile",
                f"the broker at {where} wants a client certificate signed by a CA it trusts "
                f"({exc.reason}): set kafka.ssl.certfile and kafka.ssl.keyfile")
        return _refused(
            "kafka.security_protocol",
            f"the TLS handshake with {where} failed ({exc.reason or exc}): is that a TLS "
            "listener? Check kafka.security_protocol and the port in kafka.bootstrap")
    mechanism = options.get("sasl_mechanism")
    if isinstance(exc, errors.SaslAuthenticationFailed):
        return _refused(
            "kafka.sasl_password",
            f"SASL authentication failed for user {options.get('sasl_plain_username')!r} with "
            f"{mechanism} at {where} ({exc}): fix {_CREDENTIALS} (kafka.sasl_username / "
            "kafka.sasl_password), or kafka.sasl_mechanism")
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return _refused("kafka.sasl_mechanism",
                        f"{exc}: set kafka.sasl_mechanism to one the broker enables")
    if isinstance(exc, errors.IllegalSaslStateError):
        return _refused(
            "kafka.security_protocol",
            f"the listener at {where} does not do SASL ({exc}): set kafka.security_protocol to "
            "SSL or PLAINTEXT, or point kafka.bootstrap at the SASL listener")
    return None
