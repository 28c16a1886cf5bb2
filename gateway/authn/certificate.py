"""Client certificates: identify a client by the TLS certificate it presented.

Takes the peer certificate of the request's TLS connection (only when
`listen.tls.client_ca_file` is set, so the handshake has already verified it
against that CA) and returns the `ClientIdentity` of the first client whose
`certificates` entry matches: `sha256_fingerprint` (hex, colons and case
ignored) and/or `subject` (the whole distinguished name, in RFC 4514
`CN=agent,O=Fabrikam` or OpenSSL `/O=Fabrikam/CN=agent` form, order and case
of attribute names ignored). The subject of the identity is the fingerprint.
Returns None without a verified certificate; raises Denied (`unknown_client`)
for a verified certificate that matches no client.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
from dataclasses import dataclass

from aiohttp import web
from cachetools import LRUCache
from cryptography import x509

from gateway.authn.base import Presented
from gateway.config.model import Config
from gateway.errors import Denied
from gateway.types import ClientIdentity

log = logging.getLogger("azdo_gateway.authn")

Rdns = frozenset[tuple[str, str]]

_SPLIT_RFC4514 = re.compile(r"(?<!\\)[,+]")
_SPLIT_OPENSSL = re.compile(r"(?<!\\)/")
_UNESCAPE = re.compile(r"\\(.)")


def parse_subject(text: str) -> Rdns:
    """A distinguished name as a set of (ATTRIBUTE, value) pairs."""
    text = text.strip()
    parts = _SPLIT_OPENSSL.split(text[1:]) if text.startswith("/") else _SPLIT_RFC4514.split(text)
    pairs = set()
    for part in parts:
        name, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"not a distinguished name component: {part!r}")
        pairs.add((name.strip().upper(), _UNESCAPE.sub(r"\1", value.strip())))
    return frozenset(pairs)


def normalize_fingerprint(text: str) -> str:
    return text.replace(":", "").replace(" ", "").lower()


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    fingerprint: str  # hex SHA-256 of the DER encoding
    subject: str  # RFC 4514
    rdns: Rdns


def _describe(der: bytes) -> PeerCertificate:
    cert = x509.load_der_x509_certificate(der)
    rdns = frozenset(
        (attr.rfc4514_attribute_name.upper(), str(attr.value)) for attr in cert.subject
    )
    return PeerCertificate(hashlib.sha256(der).hexdigest(), cert.subject.rfc4514_string(), rdns)


@dataclass(frozen=True, slots=True)
class _Rule:
    client: str
    fingerprint: str | None
    rdns: Rdns | None

    def matches(self, peer: PeerCertificate) -> bool:
        if self.fingerprint is not None and self.fingerprint != peer.fingerprint:
            return False
        return self.rdns is None or self.rdns == peer.rdns


class CertificateAuthenticator:
    def __init__(self, config: Config) -> None:
        tls = config.gateway.listen.tls
        self.enabled = tls is not None and tls.client_ca_file is not None
        self._rules: list[_Rule] = []
        for client in config.clients:
            for match in client.certificates:
                fp = (
                    normalize_fingerprint(match.sha256_fingerprint)
                    if match.sha256_fingerprint
                    else None
                )
                try:
                    rdns = parse_subject(match.subject) if match.subject else None
                except ValueError as err:  # `check` reports it; never match on a broken rule
                    log.error("client %s: certificate subject ignored: %s", client.name, err)
                    continue
                self._rules.append(_Rule(client.name, fp, rdns))
        self._seen: LRUCache[bytes, PeerCertificate] = LRUCache(maxsize=1024)

    def peer(self, request: web.BaseRequest) -> PeerCertificate | None:
        """The verified client certificate of the request's connection, if any."""
        if not self.enabled or request.transport is None:
            return None
        ssl_object = request.transport.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
            return None
        if ssl_object.context.verify_mode == ssl.CERT_NONE:
            return None  # not verified by the handshake: proves nothing
        der = ssl_object.getpeercert(binary_form=True)
        if not der:
            return None
        key = hashlib.sha256(der).digest()
        peer = self._seen.get(key)
        if peer is None:
            peer = self._seen[key] = _describe(der)
        return peer

    async def authenticate(
        self, request: web.BaseRequest, presented: Presented | None
    ) -> ClientIdentity | None:
        peer = self.peer(request)
        if peer is None:
            return None
        for rule in self._rules:
            if rule.matches(peer):
                return ClientIdentity(
                    client=rule.client, auth_method="certificate", subject=peer.fingerprint
                )
        raise Denied(
            f"client certificate {peer.subject} (sha256 {peer.fingerprint}) belongs to no client",
            reason="unknown_client",
        )

    async def close(self) -> None:
        return None
