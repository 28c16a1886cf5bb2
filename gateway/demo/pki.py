"""A throwaway certificate authority for the demo stand-ins (never for production).

`DemoCA()` makes a CA in memory; `issue_server()` gives a TLS server certificate
for loopback names and `issue_client()` an RSA client certificate (the kind an
Entra ID app registration holds). Everything is generated with `cryptography`
at run time, so `azdo-gateway demo` needs no test-only packages.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PEM = serialization.Encoding.PEM


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes = b""

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def write(self, path: Path) -> Path:
        """Write key and certificate into one PEM file (the `certificate_file` format)."""
        path.write_bytes(self.key_pem + self.cert_pem)
        path.chmod(0o600)
        return path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "azdo-gateway demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class DemoCA:
    """A self-signed CA that signs server and client certificates."""

    def __init__(self, name: str = "azdo-gateway demo CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = _name(name)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(_PEM)

    def _issue(
        self,
        common_name: str,
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName],
        days: int,
    ) -> IssuedCert:
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCert(cert.public_bytes(_PEM), _key_pem(key))

    def issue_server(self, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> IssuedCert:
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        key = ec.generate_private_key(ec.SECP256R1())
        return self._issue(hosts[0], key, ExtendedKeyUsageOID.SERVER_AUTH, sans, 30)

    def issue_client(self, common_name: str, *, days: int = 30) -> IssuedCert:
        """An RSA client certificate, as Entra ID app registrations use."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._issue(common_name, key, ExtendedKeyUsageOID.CLIENT_AUTH, [], days)

    def write_cert(self, path: Path) -> Path:
        path.write_bytes(self.cert_pem)
        return path

    def server_context(self, issued: IssuedCert, directory: Path) -> ssl.SSLContext:
        """A TLS server context for `issued` (files are written under `directory`)."""
        pem = issued.write(directory / "server.pem")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pem)
        return ctx
