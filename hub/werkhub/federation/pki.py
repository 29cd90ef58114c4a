"""A federation's keys and certificates, made once with ``cryptography``.

* ``pki/ca.pem`` / ``pki/ca.key``: the federation's own certificate authority (the key
  never leaves werkhub: it is bound into no sandbox);
* ``pki/link/server.pem`` / ``server.key``: the SuperLink's TLS certificate, signed by that
  CA, valid for ``IP:127.0.0.1`` and ``DNS:localhost`` only (the SuperLink listens on
  loopback; a SuperNode reaches it through its relay at ``127.0.0.1`` inside its sandbox);
* ``parties/<slug>/keys/node.key`` / ``node.pub``: a SuperNode's authentication key pair in
  the form Flower wants (an EC key on NIST P-384: the private key in OpenSSH's format, the
  public key as one OpenSSH line).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from werkhub.booking.ledger import utcnow

#: the names the SuperLink's certificate is valid for (it listens on loopback only)
SERVER_IPS = ("127.0.0.1",)
SERVER_DNS = ("localhost",)
CA_DAYS = 3650
SERVER_DAYS = 825


@dataclass(frozen=True)
class Pki:
    """Where the files of one federation's PKI lie (``folder`` = ``<fed>/pki``)."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def link(self) -> Path:
        """The folder the SuperLink's sandbox sees (certificate, key and CA; no CA key)."""
        return self.folder / "link"

    @property
    def server_cert(self) -> Path:
        return self.link / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.link / "server.key"

    @property
    def link_ca(self) -> Path:
        return self.link / "ca.pem"


def _write(path: Path, data: bytes, mode: int) -> None:
    partial = path.with_name(f".{path.name}.new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(partial, mode)
    partial.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def server_names() -> list[x509.GeneralName]:
    """The subject alternative names of the SuperLink's certificate."""
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in SERVER_DNS]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in SERVER_IPS]
    return names


def make_ca(pki: Pki, federation: str) -> bool:
    """The federation's CA and the SuperLink's certificate, unless they exist (True: made
    now). Files are werkhub's (0600; the certificates 0644)."""
    if pki.ca_cert.is_file() and pki.ca_key.is_file() and pki.server_cert.is_file():
        return False
    pki.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    pki.link.mkdir(mode=0o700, exist_ok=True)
    now = utcnow() - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"werkhub {federation} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(server_names()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    _write(pki.ca_key, _key_pem(ca_key), 0o600)
    _write(pki.server_key, _key_pem(server_key), 0o600)
    _write(pki.server_cert, server.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(pki.link_ca, ca_pem, 0o644)
    _write(pki.ca_cert, ca_pem, 0o644)  # last: its presence says "complete"
    return True


def certificate_names(pem: bytes) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a PEM certificate is valid for."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    ips = [str(i) for i in sans.get_values_for_type(x509.IPAddress)]
    return sans.get_values_for_type(x509.DNSName), ips


def make_node_keys(folder: Path, comment: str) -> tuple[Path, Path]:
    """A SuperNode's key pair in ``folder`` (made once): (private key, public key)."""
    private, public = folder / "node.key", folder / "node.pub"
    if private.is_file() and public.is_file():
        return private, public
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    _write(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write(public, line + f" {comment}\n".encode(), 0o644)
    return private, public


def fingerprint(public_key_file: Path) -> str:
    """``SHA256:<hex>`` of an OpenSSH public key line (its key part)."""
    parts = public_key_file.read_text().split()
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key: {public_key_file}")
    return "SHA256:" + hashlib.sha256(parts[1].encode()).hexdigest()
