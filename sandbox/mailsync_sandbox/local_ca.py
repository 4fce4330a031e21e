"""The local stack's own certificate authority: made once, kept under `.mailsync/tls/`, and used to sign
the certificates of every local HTTPS listener (the sandbox, the subscriber's Graph-facing listener, a
test's receiver). Everything local verifies against it; nothing disables verification.

Development tooling only (the sandbox's distribution), never used by the services in production.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "mailsync local development CA"
CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)
HOSTS = ("127.0.0.1", "localhost", "::1")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _fresh(cert_path: Path, issuer: x509.Certificate | None = None) -> x509.Certificate | None:
    """The certificate at `cert_path` if it is valid for a while yet (and signed by `issuer`)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return None
    if cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return None
    if issuer is not None:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, Exception):  # signature or issuer mismatch: a CA made since
            return None
    return cert


def ensure_ca(directory: Path) -> tuple[Path, Path]:
    """`ca.pem` and `ca.key` (mode 0600) in `directory`, made once and reused while valid."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if _fresh(cert_path) is not None and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)
    return cert_path, key_path


def issue(directory: Path, name: str, ca_cert: Path, ca_key: Path, hosts: tuple[str, ...] = HOSTS
          ) -> tuple[Path, Path]:
    """`<name>.pem` (leaf, then the CA) and `<name>.key` for `hosts`, signed by the CA; reused while valid."""
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    if _fresh(cert_path, issuer=ca) is not None and key_path.exists():
        return cert_path, key_path
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mailsync local {name}")]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM) + ca_cert.read_bytes())
    return cert_path, key_path


def local_tls(directory: Path, *names: str) -> dict[str, tuple[Path, Path]]:
    """The CA (key `"ca"`) and one certificate per name, all under `directory`. Several stacks may start
    at once (parallel test runs): a file lock makes them agree on one CA."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ca = ensure_ca(directory)
        return {"ca": ca, **{name: issue(directory, name, *ca) for name in names}}
