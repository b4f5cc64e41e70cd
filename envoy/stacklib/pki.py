"""The development PKI for mTLS: a CA made once per run dir, Envoy's server
certificate for 127.0.0.1, and client certificates with a chosen URI SAN."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .binaries import LOOPBACK
from .processes import _write_private

class CertFiles(NamedTuple):
    """A certificate and its key file; as a tuple it is what requests/hvac take as ``cert=``."""

    cert: Path
    key: Path


class DevPki:
    """A development CA, created once per run dir, with Envoy's server certificate for 127.0.0.1.

    ``issue_client(name, uri_san)`` signs client certificates for tests; with
    ``uri_san=None`` the certificate has no URI SAN at all. Keys are 0600.
    """

    CA_CERT = "mtls-ca.pem"
    CA_KEY = "mtls-ca-key.pem"
    SERVER_CERT = "mtls-server.pem"
    SERVER_KEY = "mtls-server-key.pem"
    VALIDITY = datetime.timedelta(days=30)

    def __init__(self, run_dir: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate):
        self.run_dir = Path(run_dir)
        self._ca_key = ca_key
        self._ca_cert = ca_cert

    @classmethod
    def load_or_create(cls, run_dir: Path) -> "DevPki":
        run_dir = Path(run_dir)
        cert_path, key_path = run_dir / cls.CA_CERT, run_dir / cls.CA_KEY
        if all((run_dir / name).exists() for name in (cls.CA_CERT, cls.CA_KEY, cls.SERVER_CERT, cls.SERVER_KEY)):
            ca_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if ca_cert.not_valid_after_utc > _utcnow() + datetime.timedelta(days=1):
                return cls(run_dir, serialization.load_pem_private_key(key_path.read_bytes(), None), ca_cert)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secretgate dev CA")])
        ca_cert = (
            _cert_builder(name, name, ca_key.public_key(), cls.VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(ca_key))
        cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        pki = cls(run_dir, ca_key, ca_cert)
        pki._issue("server", x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                   ExtendedKeyUsageOID.SERVER_AUTH, run_dir / cls.SERVER_CERT, run_dir / cls.SERVER_KEY)  # fmt: skip
        return pki

    @property
    def ca_cert(self) -> Path:
        """The CA bundle clients verify Envoy with (curl --cacert, requests verify=)."""
        return self.run_dir / self.CA_CERT

    @property
    def ca_pem(self) -> str:
        return self.ca_cert.read_text()

    @property
    def server(self) -> CertFiles:
        return CertFiles(self.run_dir / self.SERVER_CERT, self.run_dir / self.SERVER_KEY)

    def issue_client(self, name: str, uri_san: str | None) -> CertFiles:
        """Sign ``mtls-client-<name>.pem`` (+ ``-key.pem``) with ``uri_san`` as its only URI SAN (None: no SAN)."""
        if not name.replace("-", "").isalnum():
            raise ValueError(f"client certificate name must be alphanumeric with dashes, got {name!r}")
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri_san)]) if uri_san else None
        cert = CertFiles(self.run_dir / f"mtls-client-{name}.pem", self.run_dir / f"mtls-client-{name}-key.pem")
        self._issue(name, san, ExtendedKeyUsageOID.CLIENT_AUTH, cert.cert, cert.key)
        return cert

    def _issue(self, common_name: str, san, usage, cert_path: Path, key_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (
            _cert_builder(subject, self._ca_cert.subject, key.public_key(), self.VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(builder.sign(self._ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _cert_builder(subject: x509.Name, issuer: x509.Name, public_key, validity: datetime.timedelta):
    now = _utcnow()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
    )


def _key_usage(digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

