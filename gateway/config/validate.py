"""Checks across the whole configuration, after each file passed its schema.

Each `validate_*` takes the `Config` and returns every problem it finds (an
empty list when all is well), located with `Config.sources`; none stops at the
first. Problems with severity "warning" are reported but do not stop a load.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import ssl
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from gateway.config.messages import did_you_mean
from gateway.config.model import (
    ClientCertificateCredential,
    ClientSecretCredential,
    Config,
    OnBehalfOfCredential,
    PatCredential,
    WorkloadIdentityCredential,
)
from gateway.config.problems import WARNINGS, Severity
from gateway.config.sources import PathKey, Problem
from gateway.config.validate_state import validate_state

ENTRA_CREDENTIALS = (
    ClientSecretCredential,
    ClientCertificateCredential,
    WorkloadIdentityCredential,
    OnBehalfOfCredential,
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 method token


def _names(names: Iterable[str]) -> str:
    listed = sorted(set(names))
    return ", ".join(listed) if listed else "none"


def _unknown(kind: str, name: str, defined: Iterable[str]) -> str:
    defined = list(defined)
    if not defined:
        return f"unknown {kind} '{name}' (none are defined)"
    guess = did_you_mean(name, defined)
    hint = f"did you mean '{guess}'? " if guess else ""
    return f"unknown {kind} '{name}' ({hint}defined: {_names(defined)})"


def validate_credential_refs(config: Config) -> list[Problem]:
    """Every client's `credential` names a key of `credentials`."""
    creds = config.gateway.credentials
    out = []
    for i, client in enumerate(config.clients):
        if client.credential not in creds:
            if client.credential in config.sources.broken_credentials:
                continue
            message = _unknown("credential", client.credential, creds)
            out.append(config.sources.problem(("clients", i, "credential"), message))
        elif isinstance(creds[client.credential], OnBehalfOfCredential) and client.entra is None:
            message = (
                f"credential '{client.credential}' is on_behalf_of, which exchanges the "
                "caller's Entra ID token: this client needs an `entra` section"
            )
            out.append(config.sources.problem(("clients", i, "credential"), message))
    used = {client.credential for client in config.clients}
    for name in creds:
        if name not in used and not config.sources.incomplete:
            message = "not used by any client"
            out.append(config.sources.warning(("credentials", name), message, "unused_credential"))
    return out


def validate_identity(config: Config) -> list[Problem]:
    """identity.tenant_id when Entra is used; audiences when clients send Entra tokens."""
    identity = config.gateway.identity
    out: list[Problem] = []
    if "identity" in config.sources.broken_sections:
        return out
    entra_creds = [
        name
        for name, cred in config.gateway.credentials.items()
        if isinstance(cred, ENTRA_CREDENTIALS) and not cred.tenant_id
    ]
    entra_clients = [c.name for c in config.clients if c.entra is not None]
    if (entra_creds or entra_clients) and not identity.tenant_id:
        users = []
        if entra_creds:
            users.append(f"credentials: {', '.join(entra_creds)}")
        if entra_clients:
            users.append(f"Entra ID clients: {', '.join(entra_clients)}")
        message = f"required when Entra ID is used ({'; '.join(users)})"
        out.append(config.sources.problem(("identity", "tenant_id"), message))
    if urlsplit(identity.authority_host).scheme != "https":
        message = (
            f"expected an https URL, got '{identity.authority_host}': "
            "tokens and signing keys must not travel in clear text"
        )
        out.append(config.sources.problem(("identity", "authority_host"), message))
    if entra_clients and not identity.audiences:
        message = (
            "required when clients authenticate with Entra ID tokens "
            f"(Entra ID clients: {', '.join(entra_clients)}), e.g. [api://azdo-gateway]"
        )
        out.append(config.sources.problem(("identity", "audiences"), message))
    for i, client in enumerate(config.clients):
        entra = client.entra
        if entra is not None and not (entra.app_ids or entra.object_ids or entra.groups):
            message = "set at least one of app_ids, object_ids, groups"
            out.append(config.sources.problem(("clients", i, "entra"), message))
    return out


def validate_unique(config: Config) -> list[Problem]:
    """Client and route names and key hashes are unique across all files; key ids per client."""
    out = []
    src = config.sources

    def first(kind: str, seen: dict[str, PathKey], value: str, path: PathKey) -> None:
        if value in seen:
            at = src.locate(seen[value]).rsplit(": ", 1)[0]
            out.append(src.problem(path, f"duplicate {kind} '{value}' (first defined at {at})"))
        else:
            seen[value] = path

    clients: dict[str, PathKey] = {}
    hashes: dict[str, PathKey] = {}
    for i, client in enumerate(config.clients):
        first("client name", clients, client.name, ("clients", i, "name"))
        key_ids: dict[str, PathKey] = {}  # ids name keys within their client
        for k, key in enumerate(client.api_keys):
            first("key id", key_ids, key.id, ("clients", i, "api_keys", k, "id"))
            path = ("clients", i, "api_keys", k, "sha256")
            digest = key.sha256.lower()
            if digest in hashes:
                at = src.locate(hashes[digest])
                out.append(src.problem(path, f"duplicate key hash (also at {at})"))
            else:
                hashes[digest] = path
    routes: dict[str, PathKey] = {}
    for i, route in enumerate(config.routes):
        first("route name", routes, route.name, ("routes", i, "name"))
    return out


def _file_problem(path: str, *, secret: bool = False) -> str | None:
    """Why `path` cannot be used as an input file, or None."""
    if not os.path.exists(path):
        return f"no such file: {_show(path)}"
    if os.path.isdir(path):
        return f"is a directory, expected a file: {_show(path)}"
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except OSError as err:
        return f"cannot read {_show(path)}: {(err.strerror or str(err)).lower()}"
    if secret and not data.strip():
        return f"file is empty: {_show(path)}"
    return None


def _show(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


def _pem(path: str, *markers: str) -> str | None:
    with open(path, "rb") as fh:
        data = fh.read(1 << 20)
    missing = [m for m in markers if f"-----BEGIN {m}".encode() not in data]
    if not missing:
        return None
    if len(markers) == 2:
        return f"expected a PEM file with a CERTIFICATE and a PRIVATE KEY: {_show(path)}"
    return f"expected a PEM file with a {markers[0]}: {_show(path)}"


def validate_files(config: Config, *, offline: bool = False) -> list[Problem]:
    """Every `*_file` exists and is readable; certificates and keys parse.

    `offline`: a secret file (credentials', listen.tls's certificate and key)
    that is not there is a note, not an error: where the gateway runs, it is.
    """
    gw = config.gateway
    out = []

    def check(
        path: PathKey, value: str | None, *, secret: bool = False, mounted: bool = False
    ) -> bool:
        if not value:
            return False
        why = _file_problem(value, secret=secret)
        if why and offline and mounted and not os.path.exists(value):
            message = f"{why} (not checked offline)"
            out.append(
                config.sources.problem(path, message, code="secret_file_missing", severity="note")
            )
        elif why:
            out.append(config.sources.problem(path, why))
        return why is None

    for key in ("upstream", "identity"):
        section = getattr(gw, key)
        if check((key, "ca_file"), section.ca_file):
            try:
                ssl.create_default_context(cafile=section.ca_file)
            except (ssl.SSLError, ValueError) as err:
                message = f"not a usable CA bundle ({err}): {_show(str(section.ca_file))}"
                out.append(config.sources.problem((key, "ca_file"), message))
    tls = gw.listen.tls
    if tls is not None:
        cert_ok = check(("listen", "tls", "cert_file"), tls.cert_file, mounted=True)
        key_ok = check(("listen", "tls", "key_file"), tls.key_file, mounted=True)
        if cert_ok and key_ok:
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                    tls.cert_file, tls.key_file
                )
            except (ssl.SSLError, ValueError) as err:
                message = f"certificate and key do not load together ({err.args[-1]})"
                out.append(config.sources.problem(("listen", "tls"), message))
        if check(("listen", "tls", "client_ca_file"), tls.client_ca_file):
            why = _pem(str(tls.client_ca_file), "CERTIFICATE")
            if why:
                out.append(config.sources.problem(("listen", "tls", "client_ca_file"), why))
    for name, cred in gw.credentials.items():

        def at(key: str, name: str = name) -> PathKey:
            return ("credentials", name, key)

        if isinstance(cred, ClientSecretCredential | OnBehalfOfCredential | PatCredential):
            key = "pat_file" if isinstance(cred, PatCredential) else "client_secret_file"
            check(at(key), getattr(cred, key), secret=True, mounted=True)
        if isinstance(cred, WorkloadIdentityCredential):
            check(at("token_file"), cred.token_file, mounted=True)
        if isinstance(cred, ClientCertificateCredential | OnBehalfOfCredential):
            path = cred.certificate_file
            if check(at("certificate_file"), path, mounted=True) and path:
                why = _pem(path, "CERTIFICATE", "PRIVATE KEY")
                if why:
                    out.append(config.sources.problem(at("certificate_file"), why))
    return out


def validate_routes(config: Config) -> list[Problem]:
    """Route rules name existing clients and hosts, and say what they do."""
    names = [c.name for c in config.clients]
    hosts = config.gateway.upstream.hosts
    out = []
    for i, route in enumerate(config.routes):
        at = config.sources.problem
        if route.deny and route.allow:
            out.append(at(("routes", i), "set deny or allow, not both"))
        if route.deny and route.clients is not None:
            out.append(at(("routes", i), "a deny rule applies to every client; drop `clients`"))
        for c, name in enumerate(route.clients or ()):
            if name not in names and name not in config.sources.broken_clients:
                out.append(at(("routes", i, "clients", c), _unknown("client", name, names)))
        if (
            route.match.host not in hosts
            and route.match.host != "*"  # every host
            and "upstream" not in config.sources.broken_sections
        ):
            message = _unknown("upstream host", route.match.host, hosts)
            out.append(at(("routes", i, "match", "host"), message))
        if not route.match.path.startswith("/"):
            message = f"expected a path template starting with '/', got '{route.match.path}'"
            out.append(at(("routes", i, "match", "path"), message))
        for m, method in enumerate(route.match.method or ()):
            if not _TOKEN.match(method):
                message = f"expected an HTTP method such as GET or POST, got '{method}'"
                out.append(at(("routes", i, "match", "method", m), message))
        out.extend(_acknowledge(config, ("routes", i), route.acknowledge))
    return out


def _acknowledge(config: Config, path: PathKey, codes: Iterable[str]) -> list[Problem]:
    """`acknowledge` lists warning codes only."""
    out = []
    for n, code in enumerate(codes):
        if code not in WARNINGS:
            guess = did_you_mean(code, WARNINGS)
            hint = f"did you mean '{guess}'? " if guess else ""
            message = f"unknown warning code '{code}' ({hint}see `check --json` for codes)"
            out.append(config.sources.problem((*path, "acknowledge", n), message))
    return out


def validate_clients(config: Config) -> list[Problem]:
    """Per-client consistency: projects within organizations, auth methods usable."""
    out = []
    tls = config.gateway.listen.tls
    today = dt.datetime.now(dt.UTC).date()
    at = config.sources.problem
    warn = config.sources.warning
    soon = config.gateway.keys.expiry_warning_days
    for i, client in enumerate(config.clients):
        orgs = (
            {o.lower() for o in client.organizations} if client.organizations is not None else None
        )
        for p, project in enumerate(client.projects or ()):
            org, sep, name = project.partition("/")
            if not sep or not org or not name or "/" in name:
                message = f"expected 'organization/project', got '{project}'"
                out.append(at(("clients", i, "projects", p), message))
            elif orgs is not None and org.lower() not in orgs:
                message = f"organization '{org}' is not in this client's organizations"
                out.append(at(("clients", i, "projects", p), message))
        if client.organizations is not None and not client.organizations:
            message = "is empty: the client may reach no organization (leave it out for any)"
            out.append(warn(("clients", i, "organizations"), message, "no_organizations"))
        if (
            client.certificates
            and (tls is None or not tls.client_ca_file)
            and "listen" not in config.sources.broken_sections
        ):
            message = "certificate authentication needs listen.tls.client_ca_file"
            out.append(at(("clients", i, "certificates"), message))
        for c, cert in enumerate(client.certificates):
            fp = (cert.sha256_fingerprint or "").replace(":", "").replace(" ", "")
            if cert.sha256_fingerprint is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", fp):
                message = "expected 64 hex digits (SHA-256 of the DER certificate; ':' allowed)"
                out.append(at(("clients", i, "certificates", c, "sha256_fingerprint"), message))
            if cert.subject is not None and not _DN.fullmatch(cert.subject.strip()):
                message = "expected a distinguished name such as 'CN=agent,O=Fabrikam'"
                out.append(at(("clients", i, "certificates", c, "subject"), message))
        if not (client.api_keys or client.entra or client.certificates):
            message = "has no api_keys, entra or certificates: it can never authenticate"
            out.append(warn(("clients", i), message, "no_authentication"))
        if not client.scopes:
            message = "grants no scopes: only route rules can allow its requests"
            out.append(warn(("clients", i), message, "no_scopes"))
        for k, key in enumerate(client.api_keys):
            expires = key.expires.date() if isinstance(key.expires, dt.datetime) else key.expires
            if expires is None:
                continue
            at_key: PathKey = ("clients", i, "api_keys", k, "expires")
            left = (expires - today).days
            if left < 0:
                message = f"key '{key.id}' expired on {expires.isoformat()}"
                out.append(warn(at_key, message, "key_expired"))
            elif left <= soon:
                when = "today" if left == 0 else f"in {left} day{'s' if left != 1 else ''}"
                message = (
                    f"key '{key.id}' of client '{client.name}' expires {when} "
                    f"({expires.isoformat()}): add its successor, then remove it"
                )
                out.append(warn(at_key, message, "key_expiring"))
        out.extend(_acknowledge(config, ("clients", i), client.acknowledge))
    if not config.clients and not config.sources.incomplete:
        out.append(
            warn(("policies",), "no clients are defined: every request is denied", "no_clients")
        )
    return out


# Distinguished names as RFC 4514 (CN=a,O=b) or OpenSSL (/O=b/CN=a), each part `type=value`
_RDN = r"[A-Za-z][\w.-]*\s*=(?:[^{sep}\\]|\\.)*"
_DN = re.compile(
    "(?:{0}(?:[,+]\\s*{0})*)|(?:/{1}(?:/{1})*)".format(_RDN.format(sep=",+"), _RDN.format(sep="/"))
)


def validate_listen(config: Config) -> list[Problem]:
    """Listener settings agree with each other."""
    listen, admin = config.gateway.listen, config.gateway.admin
    out: list[Problem] = []
    if {"listen", "admin"} & config.sources.broken_sections:
        return out
    at = config.sources.problem
    if listen.public_url is not None:
        parsed = urlsplit(listen.public_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            message = (
                "expected an http(s) URL such as https://ado-gw.example.com, "
                f"got '{listen.public_url}'"
            )
            out.append(at(("listen", "public_url"), message))
    if listen.port and listen.port == admin.port and listen.host == admin.host:
        message = f"same address as listen ({listen.host}:{listen.port}): use another port"
        out.append(at(("admin", "port"), message))
    tls = listen.tls
    if tls is not None and tls.require_client_cert and not tls.client_ca_file:
        out.append(at(("listen", "tls", "require_client_cert"), "needs client_ca_file"))
    return out


def validate_limits(config: Config) -> list[Problem]:
    """Warn where a `body_bytes` class is set above the `max_body_bytes` ceiling."""
    limits = config.gateway.limits
    ceiling = limits.max_body_bytes
    if ceiling is None or "limits" in config.sources.broken_sections:
        return []
    out = []
    given = limits.body_bytes.model_fields_set
    for name in (n for n in type(limits.body_bytes).model_fields if n in given):
        value = getattr(limits.body_bytes, name)
        if value is None or value > ceiling:
            shown = "no limit" if value is None else f"{value} bytes"
            message = f"{shown} here, but max_body_bytes ({ceiling}) caps every class"
            path: PathKey = ("limits", "body_bytes", name)
            out.append(config.sources.warning(path, message, "body_limit_above_ceiling"))
    return out


def validate_secrets(
    config: Config,
    from_env: Mapping[tuple[str, PathKey], tuple[str, ...]],
    *,
    offline: bool = False,
) -> list[Problem]:
    """Warn about empty secrets, and secrets written into the file instead of ${ENV}.

    `offline`: an empty secret that came from the environment is a note (where
    the gateway runs, the variable is set)."""
    out = []
    src = config.sources
    for name, cred in config.gateway.credentials.items():
        for key in ("client_secret", "pat", "certificate_password"):
            value = getattr(cred, key, None)
            if value is None:
                continue
            path: PathKey = ("credentials", name, key)
            if not value.get_secret_value():
                message = "is empty: upstream tokens cannot be acquired with it"
                names = from_env.get((src.gateway_file, path))
                if names:
                    message += f" (is {' or '.join(names)} set?)"
                severity: Severity = "note" if offline and names else "warning"
                out.append(src.problem(path, message, code="empty_secret", severity=severity))
            elif (src.gateway_file, path) not in from_env:
                alt = f" or {key}_file" if key != "certificate_password" else ""
                message = f"secret written inline: use ${{ENV}}{alt}"
                out.append(src.warning(path, message, "inline_secret"))
    return out


def validate_all(
    config: Config,
    from_env: Mapping[tuple[str, PathKey], tuple[str, ...]] | None = None,
    *,
    offline: bool = False,
) -> list[Problem]:
    """Every cross-check; `from_env`: (file, path) of values that came from ${ENV}."""
    problems: list[Problem] = []
    for check in (
        validate_credential_refs,
        validate_identity,
        validate_unique,
        lambda config: validate_files(config, offline=offline),
        validate_routes,
        validate_clients,
        validate_listen,
        validate_limits,
        validate_state,
    ):
        problems.extend(check(config))
    problems.extend(validate_secrets(config, from_env or {}, offline=offline))
    return problems
