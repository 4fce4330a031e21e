"""Pure rules of the tenant-wide connection: the verified-domain check, what an app-only token failure
means, the consent state's signature, and the app certificate setting."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from services.core.adapters.config import ConfigError, load_settings
from services.core.adapters.graph.errors import Severity
from services.core.adapters.tenant_rules import check_domains, classify_app_token_failure
from services.core.application.tenant import sign_state, verify_state

KEY = base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")


def test_every_user_domain_must_be_verified():
    ok = check_domains(["a@Contoso.example", "b@contoso.example"], ["contoso.example", "contoso.onmicrosoft.com"])
    assert ok.ok and ok.reason is None and ok.covered == {"contoso.example"}
    mixed = check_domains(["a@contoso.example", "b@victim.example"], ["contoso.example"])
    assert not mixed.ok and mixed.foreign == {"victim.example"} and "victim.example" in (mixed.reason or "")
    foreign = check_domains(["a@account.example"], ["other.example"])
    assert not foreign.ok and "account.example" in (foreign.reason or "")
    empty = check_domains([], ["contoso.example"])
    assert not empty.ok and "no directory users" in (empty.reason or "")


@pytest.mark.parametrize(("message", "status", "severity", "code"), [
    ("AADSTS700016: Application with identifier 'x' was not found in the directory 'y'.", 400,
     Severity.CONSENT, "AADSTS700016"),
    ("Authentication failed: AADSTS7000229: missing service principal", 400, Severity.CONSENT, "AADSTS7000229"),
    ("AADSTS700027: Client assertion failed signature validation.", 401, Severity.PERMANENT, "AADSTS700027"),
    ("AADSTS7000215: Invalid client secret provided.", 401, Severity.PERMANENT, "AADSTS7000215"),
    ("AADSTS90033: A transient error has occurred.", 503, Severity.TRANSIENT, "http_503"),
    ("connection reset", None, Severity.TRANSIENT, "network_error"),
])
def test_app_token_failures_are_classified(message, status, severity, code):
    found = classify_app_token_failure(message, status)
    assert (found.severity, found.error_code) == (severity, code)
    if severity is Severity.CONSENT:
        assert "consent" in found.reason and "administrator" in found.reason


def test_state_signature_binds_the_id():
    state = sign_state("secret", "abc")
    assert verify_state("secret", state) == "abc"
    assert verify_state("other", state) is None
    assert verify_state("secret", "abd" + state[3:]) is None
    assert verify_state("secret", "abc") is None and verify_state("secret", "") is None


def _env(**over: str) -> dict[str, str]:
    return {"MAILSYNC_KAFKA_BOOTSTRAP": "127.0.0.1:9092", "MAILSYNC_DATABASE_URL": "postgresql://u:p@h:5432/db",
            "MAILSYNC_CLIENT_ID": "client", "MAILSYNC_CLIENT_SECRET": "secret", "MAILSYNC_TOKEN_KEYS": f"k1:{KEY}",
            "MAILSYNC_API_TOKEN": "api", "MAILSYNC_SESSION_SECRET": "session", **over}


def _pem(tmp_path, *, key: bool = True, password: bytes | None = None):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(private, hashes.SHA256()))
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    data = cert.public_bytes(serialization.Encoding.PEM)
    if key:
        data = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption) + data
    path = tmp_path / "app.pem"
    path.write_bytes(data)
    return str(path)


def test_app_certificate_setting(tmp_path):
    good = _pem(tmp_path)
    assert load_settings(_env(MAILSYNC_APP_CERT_FILE=good)).app_cert_file == good
    assert load_settings(_env()).app_cert_file is None
    with pytest.raises(ConfigError, match=r"MAILSYNC_APP_CERT_FILE .* not a readable file"):
        load_settings(_env(MAILSYNC_APP_CERT_FILE=str(tmp_path / "missing.pem")))
    with pytest.raises(ConfigError, match="must be a PEM holding the private key and the certificate"):
        load_settings(_env(MAILSYNC_APP_CERT_FILE=_pem(tmp_path, key=False)))
    with pytest.raises(ConfigError, match="encrypted key"):
        load_settings(_env(MAILSYNC_APP_CERT_FILE=_pem(tmp_path, password=b"pw")))
