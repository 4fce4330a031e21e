"""Certificate credentials of an application (RFC 7523 `client_assertion`, as Entra verifies them).

An application registers certificates (`POST /sandbox/apps/{client_id}/certificates {"pem"}`); a token
request then carries a JWT signed with the certificate's private key whose header names the certificate
by thumbprint (`x5t#S256`: base64url SHA-256 of the DER, or the older `x5t`: SHA-1), with `iss` = `sub` =
the client id, `aud` = the token endpoint, `exp` in the future and a `jti` (entra-docs,
certificate-credentials). Signatures: PS256 (what azure-identity sends) or RS256.
Each failure names the AADSTS code Entra uses: 700027 (signature or certificate not found), 700024
(assertion outside its time window), 700021 (wrong issuer or subject), 700016 is the caller's.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class RegisteredCertificate:
    sha1: str  # base64url, no padding
    sha256: str
    public_key: rsa.RSAPublicKey
    not_after: float


class AssertionRefused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def register(pem: str) -> RegisteredCertificate:
    """A PEM certificate with an RSA key; ValueError when it is not one."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate ({exc})") from None
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the certificate's key must be RSA (Entra accepts RSA certificates)")
    der = cert.public_bytes(serialization.Encoding.DER)
    return RegisteredCertificate(_b64(hashlib.sha1(der).digest()), _b64(hashlib.sha256(der).digest()),  # noqa: S324
                                 key, cert.not_valid_after_utc.timestamp())


def verify(assertion: str, *, client_id: str, token_url_path: str, certificates: list[RegisteredCertificate],
           now: float, seen_jti: set[str]) -> None:
    """Raises AssertionRefused unless `assertion` is a valid client assertion of `client_id`."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise AssertionRefused(50027, "JWT token is invalid or malformed.")
    try:
        header: Any = json.loads(_unb64(parts[0]))
        claims: Any = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except ValueError:
        raise AssertionRefused(50027, "JWT token is invalid or malformed.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AssertionRefused(50027, "JWT token is invalid or malformed.")
    thumb_256, thumb_1 = str(header.get("x5t#S256", "")).rstrip("="), str(header.get("x5t", "")).rstrip("=")
    cert = next((c for c in certificates if (thumb_256 and c.sha256 == thumb_256) or (thumb_1 and c.sha1 == thumb_1)),
                None)
    if cert is None:
        raise AssertionRefused(700027, f"The certificate with identifier used to sign the client assertion is not "
                                       f"registered on application. [Reason - The key was not found., Thumbprint of "
                                       f"key used by client: '{thumb_256 or thumb_1}']")
    signed = f"{parts[0]}.{parts[1]}".encode()
    alg = header.get("alg")
    try:
        if alg == "PS256":
            cert.public_key.verify(signature, signed, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                                 salt_length=padding.PSS.AUTO), hashes.SHA256())
        elif alg == "RS256":
            cert.public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise AssertionRefused(700027, f"Client assertion uses an unsupported algorithm {str(alg)[:20]!r}.")
    except InvalidSignature:
        raise AssertionRefused(700027, "Client assertion failed signature validation.") from None
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AssertionRefused(700021, "Client assertion application identifier doesn't match 'client_id' "
                                       "parameter.")
    if not str(claims.get("aud", "")).rstrip("/").lower().endswith(token_url_path.lower()):
        raise AssertionRefused(700212, "No matching federated identity record found for presented assertion "
                                       "audience.")
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, int | float) or exp <= now or (isinstance(nbf, int | float) and nbf > now + 300):
        raise AssertionRefused(700024, "Client assertion is not within its valid time range.")
    if cert.not_after <= now:
        raise AssertionRefused(700027, "Client assertion contains an expired certificate.")
    jti = str(claims.get("jti", ""))
    if not jti or jti in seen_jti:
        raise AssertionRefused(700027, "Client assertion was already used (jti replayed) or has no jti.")
    seen_jti.add(jti)
