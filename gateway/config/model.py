"""The configuration contract of DESIGN.md as typed, immutable models.

`GatewayConfig` is `gateway.yaml`; `PolicyFile` is one policy file. `Config`
is the whole loaded, validated configuration that the app is built from.
Unknown keys are errors (`extra="forbid"`); choices are `Literal`s;
credentials are a union discriminated on `type`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from gateway.config.problems import Problem
from gateway.config.sources import PathKey, SourceMap


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- gateway.yaml -----------------------------------------------------------


class TLS(Model):
    cert_file: str
    key_file: str
    client_ca_file: str | None = None  # set: clients may (or must) present certificates
    require_client_cert: bool = False


def _network(cidr: str) -> str:
    try:
        ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as err:
        detail = f" ({err})" if "host bits" in str(err) else ""
        raise ValueError(
            f"expected a network such as 10.0.0.0/8 or an address, got {cidr!r}{detail}"
        ) from None
    return cidr


Network = Annotated[str, AfterValidator(_network)]  # CIDR, or one address


class Listen(Model):
    host: str = "0.0.0.0"  # noqa: S104 - a proxy listens on all interfaces by default
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None  # default: derived from host/port/tls
    allowed_hosts: tuple[str, ...] = ()  # Host headers that may serve as public URL
    tls: TLS | None = None
    # peers whose X-Forwarded-For / Forwarded is believed (gateway.clientaddr)
    trusted_proxies: tuple[Network, ...] = ()


class Admin(Model):
    host: str = "127.0.0.1"
    port: int = Field(9090, ge=0, le=65535)


DEFAULT_HOSTS = {
    "main": "https://dev.azure.com",
    "vssps": "https://vssps.dev.azure.com",
    "vsrm": "https://vsrm.dev.azure.com",
    "feeds": "https://feeds.dev.azure.com",
    "pkgs": "https://pkgs.dev.azure.com",
    "vsaex": "https://vsaex.dev.azure.com",
    "vstmr": "https://vstmr.dev.azure.com",
    "advsec": "https://advsec.dev.azure.com",
    "artifacts": "https://artifacts.dev.azure.com",
    "auditservice": "https://auditservice.dev.azure.com",
    "almsearch": "https://almsearch.dev.azure.com",
    "extmgmt": "https://extmgmt.dev.azure.com",
    "status": "https://status.dev.azure.com",
    "analytics": "https://analytics.dev.azure.com",
    "app": "https://app.vssps.visualstudio.com",
}


def _base_url(url: str) -> str:
    parsed = urlsplit(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ValueError(f"expected an http(s) base URL such as https://dev.azure.com, got {url!r}")
    if parsed.query or parsed.fragment:
        raise ValueError(f"expected a base URL without query or fragment, got {url!r}")
    return url.rstrip("/")


BaseUrl = Annotated[str, AfterValidator(_base_url)]


def _proxy_url(url: SecretStr | None) -> SecretStr | None:
    # SECURITY: the URL may carry the proxy's credentials; no message repeats it.
    if url is None:
        return None
    parsed = urlsplit(url.get_secret_value())
    try:
        parsed.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parsed = urlsplit("")
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or parsed.path not in ("", "/")
    ):
        raise ValueError(
            "expected an http(s) proxy URL such as http://proxy.example.com:3128 "
            "(user:password@ allowed)"
        )
    return url


class Upstream(Model):
    hosts: dict[str, BaseUrl] = Field(default_factory=lambda: dict(DEFAULT_HOSTS))
    connect_timeout_s: float = Field(10, gt=0)
    read_timeout_s: float = Field(300, gt=0)
    ca_file: str | None = None
    max_connections: int = Field(1024, gt=0)  # open upstream connections per worker
    max_connections_per_host: int = Field(512, gt=0)  # ... to one host of `hosts`
    proxy: Annotated[SecretStr | None, AfterValidator(_proxy_url)] = None
    trust_env: bool = False  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: dict[str, str]) -> dict[str, str]:
        if "main" not in hosts:
            raise ValueError("missing required key 'main' (the host the gateway's root maps to)")
        return hosts

    @model_validator(mode="after")
    def _one_proxy_source(self) -> Upstream:
        if self.proxy is not None and self.trust_env:
            raise ValueError("set either proxy or trust_env, not both")
        return self

    def proxy_for(self, url: str) -> str | None:
        """The egress proxy that requests to `url` go through; None: direct.

        `proxy` when set; with `trust_env`, the environment's proxy for the
        URL's scheme (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, lower case
        too) unless `NO_PROXY` names its host. Used for Azure DevOps and for
        the identity provider alike.
        """
        if self.proxy is not None:
            return self.proxy.get_secret_value()
        if not self.trust_env:
            return None
        parts = urlsplit(url)
        proxies = urllib.request.getproxies_environment()
        chosen = proxies.get(parts.scheme) or proxies.get("all")
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if not chosen or bypass(parts.netloc, proxies):
            return None
        return chosen


class Identity(Model):
    authority_host: BaseUrl = "https://login.microsoftonline.com"
    tenant_id: str | None = None
    audiences: tuple[str, ...] = ()
    ca_file: str | None = None
    refresh_ahead_s: float = Field(300, ge=0)


def read_secret(value: SecretStr | None, file: str | None) -> str:
    """The secret given inline/from ${ENV}, or read now from its `*_file`.

    Files are re-read on every call, so a rotated secret file is picked up;
    one trailing newline is dropped. Raises OSError if the file is unreadable.
    """
    if value is not None:
        return value.get_secret_value()
    if file is None:
        raise ValueError("no secret configured")
    with open(file, encoding="utf-8") as fh:
        text = fh.read()
    return text.removesuffix("\n").removesuffix("\r")


class _Credential(Model):
    tenant_id: str | None = None  # overrides identity.tenant_id for this credential


class ClientSecretCredential(_Credential):
    type: Literal["client_secret"]
    client_id: str
    client_secret: SecretStr | None = None
    client_secret_file: str | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> ClientSecretCredential:
        if (self.client_secret is None) == (self.client_secret_file is None):
            raise ValueError("set exactly one of client_secret, client_secret_file")
        return self

    def secret(self) -> str:
        return read_secret(self.client_secret, self.client_secret_file)


class ClientCertificateCredential(_Credential):
    type: Literal["client_certificate"]
    client_id: str
    certificate_file: str  # PEM with the private key
    certificate_password: SecretStr | None = None
    send_x5c: bool = False


class ManagedIdentityCredential(_Credential):
    type: Literal["managed_identity"]
    client_id: str | None = None
    object_id: str | None = None
    resource_id: str | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> ManagedIdentityCredential:
        given = [k for k in ("client_id", "object_id", "resource_id") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"set at most one of client_id, object_id, resource_id (got {given})")
        return self


class WorkloadIdentityCredential(_Credential):
    type: Literal["workload_identity"]
    client_id: str
    token_file: str


class OnBehalfOfCredential(_Credential):
    type: Literal["on_behalf_of"]
    client_id: str
    client_secret: SecretStr | None = None
    client_secret_file: str | None = None
    certificate_file: str | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> OnBehalfOfCredential:
        given = [
            k
            for k in ("client_secret", "client_secret_file", "certificate_file")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of client_secret, client_secret_file, certificate_file"
            )
        return self

    def secret(self) -> str:
        """The client secret (not for certificate_file)."""
        return read_secret(self.client_secret, self.client_secret_file)


class PatCredential(_Credential):
    type: Literal["pat"]
    pat: SecretStr | None = None
    pat_file: str | None = None
    user: str = ""

    @model_validator(mode="after")
    def _one_secret(self) -> PatCredential:
        if (self.pat is None) == (self.pat_file is None):
            raise ValueError("set exactly one of pat, pat_file")
        return self

    def secret(self) -> str:
        return read_secret(self.pat, self.pat_file)


Credential = Annotated[
    ClientSecretCredential
    | ClientCertificateCredential
    | ManagedIdentityCredential
    | WorkloadIdentityCredential
    | OnBehalfOfCredential
    | PatCredential,
    Field(discriminator="type"),
]


class Audit(Model):
    file: str | None = "-"  # JSON lines; "-" is stdout; null/"" disables


BodyClass = Literal["rest", "git", "packages", "unmatched"]


class BodyLimits(Model):
    """Request body caps per route class (derived from the matched operation); null: none."""

    rest: int | None = Field(32 * 1024 * 1024, ge=0)  # JSON REST APIs under /_apis/
    git: int | None = Field(None, ge=0)  # git smart HTTP and LFS under /_git/
    packages: int | None = Field(None, ge=0)  # feed protocols under /_packaging/
    unmatched: int | None = Field(32 * 1024 * 1024, ge=0)  # no catalog operation (route allow)

    def limit(self, body_class: BodyClass, ceiling: int | None) -> int | None:
        """The effective cap: the class's, never above `max_body_bytes` (None: no cap)."""
        own: int | None = getattr(self, body_class)
        if own is None or ceiling is None:
            return ceiling if own is None else own
        return min(own, ceiling)


class Limits(Model):
    max_header_bytes: int = Field(16384, gt=0)
    max_url_length: int = Field(8192, gt=0)
    max_body_bytes: int | None = Field(None, ge=0)  # the ceiling over every body_bytes class
    body_bytes: BodyLimits = BodyLimits()
    idle_timeout_s: float = Field(75, gt=0)
    max_inflight: int = Field(4096, gt=0)
    rewrite_max_bytes: int = Field(8 * 1024 * 1024, gt=0)  # larger bodies stream unrewritten
    shutdown_grace_s: float = Field(30, ge=0)


class Keys(Model):
    expiry_warning_days: int = Field(14, ge=0)  # `check` warns about keys expiring this soon


class LogSettings(Model):
    """`logging`: the process's own log lines on stderr (the audit trail is apart)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class State(Model):
    """Where limits, failure counts and upstream tokens are kept: this process only
    (`memory`), or a Redis (or Valkey) server that every worker and replica shares."""

    backend: Literal["memory", "redis"] = "memory"
    url: SecretStr | None = None  # redis://[:password@]host:port/db, rediss://, unix://
    key_prefix: str = Field("azgw:", max_length=64)
    encryption_key: SecretStr | None = None  # 32 bytes, base64
    encryption_key_file: str | None = None
    on_error: Literal["open", "closed"] = "open"
    timeout_s: float = Field(0.05, gt=0, le=10)  # longest one state call may take

    def key(self) -> bytes:
        """The 32-byte encryption key (the file is read now). Raises EncryptionKeyError
        (a ValueError) when it is missing or not 32 bytes of base64, OSError when the
        file cannot be read."""
        if self.encryption_key is None and self.encryption_key_file is None:
            raise EncryptionKeyError("no encryption_key or encryption_key_file")
        text = read_secret(self.encryption_key, self.encryption_key_file)
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            key = None
        if key is None or len(key) != 32:
            got = "text that is not base64" if key is None else f"{len(key)} bytes"
            raise EncryptionKeyError(
                f"expected 32 bytes in base64 (make one with `openssl rand -base64 32`), got {got}"
            )
        return key


class EncryptionKeyError(ValueError):
    """`state.encryption_key` is missing, or not 32 bytes of base64."""


class GatewayConfig(Model):
    listen: Listen = Listen()
    admin: Admin = Admin()
    upstream: Upstream = Upstream()
    identity: Identity = Identity()
    credentials: dict[str, Credential] = Field(default_factory=dict)
    policies: tuple[str, ...] = ()
    audit: Audit = Audit()
    limits: Limits = Limits()
    keys: Keys = Keys()
    logging: LogSettings = LogSettings()
    state: State = State()


# --- policy files -----------------------------------------------------------


class ApiKey(Model):
    id: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    expires: dt.date | dt.datetime | None = None


class EntraMatch(Model):
    app_ids: tuple[str, ...] = ()
    object_ids: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


class CertificateMatch(Model):
    subject: str | None = None
    sha256_fingerprint: str | None = None

    @model_validator(mode="after")
    def _something(self) -> CertificateMatch:
        if not self.subject and not self.sha256_fingerprint:
            raise ValueError("set subject, sha256_fingerprint or both")
        return self


class RateLimit(Model):
    per_minute: int = Field(gt=0)
    burst: int | None = Field(None, gt=0)
    max_concurrent: int | None = Field(None, gt=0)


class Client(Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    api_keys: tuple[ApiKey, ...] = ()
    entra: EntraMatch | None = None
    certificates: tuple[CertificateMatch, ...] = ()
    credential: str
    scopes: tuple[str, ...] = ()
    organizations: tuple[str, ...] | None = None  # None: any
    projects: tuple[str, ...] | None = None  # "org/project" (name or id); None: any
    mode: Literal["enforce", "report"] = "enforce"
    rate_limit: RateLimit | None = None
    acknowledge: tuple[str, ...] = ()  # warning codes that are a deliberate choice here


_ONE_OR_MANY_METHODS = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
        {"type": "null"},
    ],
    "default": None,
}


class RouteMatch(Model):
    # upper case; None: any method; YAML may give one string
    method: Annotated[tuple[str, ...] | None, WithJsonSchema(_ONE_OR_MANY_METHODS)] = None
    path: str  # template: {param} is one segment, ** is any number of segments
    host: str = "main"

    @field_validator("method", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("method")
    @classmethod
    def _upper(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else tuple(m.upper() for m in value)


class Route(Model):
    name: str = Field(min_length=1)
    match: RouteMatch
    deny: bool = False  # deny every matching request
    clients: tuple[str, ...] | None = None  # only these clients may call matching requests
    scopes: tuple[str, ...] = ()  # extra scopes required on top of the operation's
    allow: bool = False  # allow requests the catalog has no operation for (or batch ones)
    acknowledge: tuple[str, ...] = ()  # warning codes that are a deliberate choice here


class PolicyFile(Model):
    clients: tuple[Client, ...] = ()
    routes: tuple[Route, ...] = ()


# --- the loaded whole -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    """gateway.yaml and every policy file it names, validated together."""

    path: Path  # the gateway.yaml this was loaded from
    gateway: GatewayConfig
    clients: tuple[Client, ...]
    routes: tuple[Route, ...]
    files: tuple[Path, ...] = ()  # every file read (for reload-on-change)
    problems: tuple[Problem, ...] = ()  # warnings and notes (a Config has no errors)
    acknowledged: tuple[Problem, ...] = ()  # warnings its clients and routes acknowledge
    sources: SourceMap = field(default_factory=SourceMap, repr=False, compare=False)

    _by_name: dict[str, Client] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Client] = {}
        for c in self.clients:
            by_name.setdefault(c.name, c)  # names are unique once validated; first wins
        object.__setattr__(self, "_by_name", by_name)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")

    @property
    def notes(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "note")

    def client(self, name: str) -> Client | None:
        """The client named `name`: a dict lookup, as every request asks for it."""
        return self._by_name.get(name)

    def locate(self, path: PathKey) -> str:
        """The "file:line: key" of a config element, for messages.

        `path` starts at `Config`: ("clients", 2, "scopes", 1) is the second scope
        of config.clients[2]; ("credentials", "build-sp") is in gateway.yaml.
        The key shown is the one written in that file (clients[0] if it is the
        first client of its file).
        """
        return self.sources.locate(path)
