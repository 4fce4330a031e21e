"""The local stack's application certificate: the credential mailsync signs its client assertions with
for the tenant-wide connection (client credentials, RFC 7523). An RSA key (Entra takes RSA certificates)
and a certificate signed by the local CA (local_ca.py), in one PEM file (key first, then certificate),
the form azure-identity's CertificateCredential reads. Made once under `.mailsync/tls/`, reused while
valid. Development tooling only: production mounts a certificate registered with the real app.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailsync_sandbox.local_ca import LEAF_DAYS, RENEW_BEFORE, _write_private

FILE_NAME = "app-credential.pem"


def _still_good(path: Path) -> bool:
    try:
        data = path.read_bytes()
        cert = x509.load_pem_x509_certificate(data)
        serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - RENEW_BEFORE > dt.datetime.now(dt.UTC)


def ensure_app_certificate(directory: Path, ca_cert: Path, ca_key: Path, client_id: str) -> Path:
    path = directory / FILE_NAME
    if _still_good(path):
        return path
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mailsync app {client_id}")]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write_private(path, key_pem + cert.public_bytes(serialization.Encoding.PEM))
    return path


def certificate_pem(path: Path) -> str:
    """The certificate part (what is registered with the application), without the key."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.public_bytes(serialization.Encoding.PEM).decode()
