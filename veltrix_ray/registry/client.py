"""A Confluent-API schema registry client (Confluent, Apicurio's ccompat, Karapace, Redpanda):
the few calls a pipeline and the producer need, over the standard library's HTTP."""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from veltrix_ray.errors import ConfigError, RetriableError, VeltrixError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryUnavailable(RetriableError):
    """The registry did not answer (connection refused, timeout) or failed (HTTP 5xx)."""


class RegistryError(VeltrixError):
    """The registry refused a request (HTTP 4xx)."""

    def __init__(self, message: str, status: int, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code  # the registry's error_code, e.g. 40401 (subject not found)


class SchemaNotFound(RegistryError):
    """No such subject, version or schema id (HTTP 404)."""


class IncompatibleSchema(RegistryError):
    """The subject's compatibility level refused the schema (HTTP 409 on register)."""


@dataclass(frozen=True)
class Schema:
    id: int
    schema_type: str  # AVRO | PROTOBUF | JSON
    text: str
    # {"name": import path, "subject": ..., "version": ...}
    references: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Version:
    subject: str
    version: int
    schema: Schema


class RegistrySettings(Protocol):
    """The schema_registry config section."""

    url: str | None
    username: str | None
    password: str | None
    timeout_s: float


class RegistryClient:
    """url: the Confluent API's base, e.g. http://127.0.0.1:18081/apis/ccompat/v7. Credentials
    (arguments, or user:password@ in the URL) go into a basic auth header, never into errors."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("schema_registry.url must be an http(s) URL with a host, e.g. "
                              "http://127.0.0.1:18081/apis/ccompat/v7")
        if parts.username is not None and username is None:
            username, password = unquote(parts.username), unquote(parts.password or "")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6
            netloc = netloc.replace(parts.hostname, f"[{parts.hostname}]", 1)
        self.url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.timeout_s = timeout_s
        self._headers = {"Accept": CONTENT_TYPE}
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    @classmethod
    def from_config(cls, cfg: RegistrySettings) -> RegistryClient:
        if not cfg.url:
            raise ConfigError("schema_registry.url is not set; set it (or "
                              "VELTRIX_SCHEMA_REGISTRY_URL, which `veltrix-ray local env` "
                              "exports for the local stack's registry)")
        return cls(cfg.url, cfg.username, cfg.password, cfg.timeout_s)

    def __repr__(self) -> str:
        return f"RegistryClient({self.url!r})"

    def schema(self, schema_id: int) -> Schema:
        reply = self._call("GET", f"/schemas/ids/{int(schema_id)}")
        return _schema(schema_id, reply)

    def latest(self, subject: str) -> Version:
        return self._version(subject, "latest")

    def version(self, subject: str, version: int) -> Version:
        return self._version(subject, str(int(version)))

    def register(self, subject: str, text: str, schema_type: str = "AVRO",
                 references: Iterable[Mapping[str, Any]] = ()) -> int:
        """The schema's id: the existing one when the subject already holds this schema."""
        body: dict[str, Any] = {"schema": text}
        if schema_type != "AVRO":  # the API's default; some registries reject it spelled out
            body["schemaType"] = schema_type
        refs = [dict(r) for r in references]
        if refs:
            body["references"] = refs
        reply = self._call("POST", f"/subjects/{_seg(subject)}/versions", body)
        return int(reply["id"])

    def set_compatibility(self, subject: str, level: str) -> None:
        """level: NONE | BACKWARD | FORWARD | FULL (| *_TRANSITIVE)."""
        self._call("PUT", f"/config/{_seg(subject)}", {"compatibility": level})

    def versions_of(self, schema_id: int) -> list[tuple[str, int]]:
        """The (subject, version) pairs that hold schema `schema_id`."""
        reply = self._call("GET", f"/schemas/ids/{int(schema_id)}/versions")
        return [(str(sv["subject"]), int(sv["version"])) for sv in reply or ()
                if isinstance(sv, dict) and "subject" in sv and "version" in sv]

    def subjects(self) -> list[str]:
        return [str(s) for s in self._call("GET", "/subjects")]

    def _version(self, subject: str, version: str) -> Version:
        reply = self._call("GET", f"/subjects/{_seg(subject)}/versions/{version}")
        return Version(str(reply.get("subject", subject)), int(reply["version"]),
                       _schema(int(reply["id"]), reply))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        url = self.url + path
        data = None
        headers = dict(self._headers)
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = CONTENT_TYPE
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _http_error(method, url, exc) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc or type(exc).__name__
            raise RegistryUnavailable(
                f"The schema registry is unreachable: {method} {url} failed ({reason}; "
                f"timeout {self.timeout_s:g}s). Is it running (`veltrix-ray local up` starts "
                "one), and is schema_registry.url right?") from None


def _seg(subject: str) -> str:
    return quote(subject, safe="")


def _schema(schema_id: int, reply: Mapping[str, Any]) -> Schema:
    refs = tuple(dict(r) for r in reply.get("references") or ())
    return Schema(int(schema_id), str(reply.get("schemaType") or "AVRO"), str(reply["schema"]),
                  refs)


def _http_error(method: str, url: str, exc: urllib.error.HTTPError) -> VeltrixError:
    try:
        payload = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    message = str(payload.get("message") or exc.reason)
    code = payload.get("error_code")
    code = int(code) if isinstance(code, int) else None
    what = f"{method} {url}: HTTP {exc.code} {message}"
    if exc.code >= 500:
        return RegistryUnavailable(f"The schema registry failed: {what}")
    if exc.code == 404:
        return SchemaNotFound(f"Not in the schema registry: {what}", exc.code, code)
    if exc.code == 409:
        return IncompatibleSchema(
            f"The schema registry refused the schema as incompatible with the subject's "
            f"earlier versions under its compatibility level: {what}", exc.code, code)
    if exc.code in (401, 403):
        return RegistryError(
            f"The schema registry refused the credentials: {what}. Set "
            "VELTRIX_SCHEMA_REGISTRY_USERNAME and VELTRIX_SCHEMA_REGISTRY_PASSWORD.",
            exc.code, code)
    return RegistryError(f"The schema registry refused the request: {what}", exc.code, code)
