"""What the identity platform knows: authorization codes, access and refresh tokens, revocations,
tenant consent and Conditional Access policies. Every lifetime reads the sandbox clock (clock.py).

Access tokens look like Microsoft's (a JWT: `header.claims.signature`, signed with a per-process
key nobody else knows) but the store, not the signature, decides whether one is valid. Every grant
carries a sequence number; a revocation covers everything issued up to it and nothing issued later
(a new sign-in works).

Revocation follows continuous access evaluation as Microsoft documents it (entra-docs,
concept-continuous-access-evaluation and claims-challenge): an access token stays valid until it
expires after a password reset or revocation, unless it was issued to a client that declared the
`cp1` capability (`claims={"access_token":{"xms_cc":{"values":["cp1"]}}}` on the token request);
such a token is challenged at once (401 `insufficient_claims`, see graph_core.py). Only the critical
events CAE evaluates challenge a token: `password_reset` and `mfa_required`; a refresh token that
expired through inactivity (`inactive`) leaves access tokens alone. A Conditional Access block on the
tenant likewise challenges cp1 tokens only (403) and refuses new tokens (AADSTS53003).

Refresh tokens are not single-use (entra-docs, v2-oauth2-auth-code-flow: "Refresh tokens are not
revoked when used to acquire new access tokens"): every refresh returns a new one, and the old one
keeps working until it expires (90 days) or is revoked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from mailsync_sandbox.clock import Clock

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
KNOWN_SCOPES = ("User.Read", "User.ReadBasic.All", "Mail.Read", "Mail.ReadBasic", "Mail.ReadWrite", "Mail.Send",
                "MailboxSettings.Read", *OIDC_SCOPES)
DEFAULT_GRANT = ("User.Read", "Mail.Read")  # what `.default` stands for (the app's registered permissions)
MAIL_READ_SCOPES = frozenset({"mail.read", "mail.readwrite", "mail.readbasic"})
CODE_LIFETIME_S = 600.0
REFRESH_LIFETIME_S = 90 * 24 * 3600.0
CAE_REASONS = frozenset({"password_reset", "mfa_required"})  # critical events that challenge cp1 tokens


def normalize_scopes(raw: str | list[str]) -> tuple[str, ...]:
    """Space-separated (or listed) scopes, resource prefixes dropped, known names in canonical case."""
    items = raw.split() if isinstance(raw, str) else raw
    canonical = {s.lower(): s for s in KNOWN_SCOPES}
    out: list[str] = []
    for item in items:
        name = item.rsplit("/", 1)[-1] if item.lower().startswith(("https://", "http://")) else item
        names = list(DEFAULT_GRANT) if name == ".default" else [canonical.get(name.lower(), name)]
        out.extend(n for n in names if n.lower() not in {o.lower() for o in out})
    return tuple(out)


def graph_scopes(scopes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(s for s in scopes if s.lower() not in OIDC_SCOPES)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass(frozen=True)
class Grant:
    """A delegated grant (a user's), or with `app_only` an application's in one tenant: then `user_id` is
    the service principal (`app_principal`), `scopes` are the application permissions (`roles`)."""

    user_id: str
    tenant_id: str
    client_id: str
    scopes: tuple[str, ...]
    seq: int
    app_only: bool = False


# The application permissions an administrator grants with `.default` (the app's registered ones).
APP_ROLES = ("Mail.Read", "Mail.ReadBasic.All", "User.Read.All", "Mail.Send", "Organization.Read.All")


def app_principal(tenant_id: str, client_id: str) -> str:
    """The service principal's object id stand-in: one per (tenant, application)."""
    return "sp-" + hashlib.sha256(f"{tenant_id.lower()}:{client_id}".encode()).hexdigest()[:32]


@dataclass
class AuthCode:
    grant: Grant
    redirect_uri: str
    challenge: str | None
    method: str | None
    expires_at: float
    used: bool = False


@dataclass
class AccessToken:
    grant: Grant
    expires_at: float  # sandbox epoch seconds
    cp1: bool = False  # issued to a client that declared the cp1 capability (xms_cc)
    issued_at: float = 0.0


@dataclass
class RefreshToken:
    grant: Grant
    expires_at: float


@dataclass(frozen=True)
class Revocation:
    seq: int
    reason: str
    at: float  # sandbox epoch seconds: the `nbf` a claims challenge asks for


def claims_request(raw: str) -> dict[str, Any] | None:
    """The `claims` token-request parameter as JSON (None when absent; ValueError when malformed)."""
    if not raw.strip():
        return None
    parsed = json.loads(raw)
    if not isinstance(parsed, dict):
        raise ValueError("claims must be a JSON object")
    return parsed


def declares_cp1(claims: dict[str, Any] | None) -> bool:
    """True when `claims` carries `{"access_token":{"xms_cc":{"values":[..."cp1"...]}}}`."""
    access = claims.get("access_token") if claims else None
    xms_cc = access.get("xms_cc") if isinstance(access, dict) else None
    values = xms_cc.get("values") if isinstance(xms_cc, dict) else None
    return isinstance(values, list) and "cp1" in values


def challenge_claims(nbf: float) -> str:
    """The base64 claims of a CAE challenge: a token issued no earlier than `nbf` is essential."""
    body = {"access_token": {"nbf": {"essential": True, "value": str(int(nbf))}}}
    return base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()


@dataclass
class TokenStore:
    clock: Clock = field(default_factory=Clock)
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    seq: int = 0
    codes: dict[str, AuthCode] = field(default_factory=dict)
    access: dict[str, AccessToken] = field(default_factory=dict)
    refresh: dict[str, RefreshToken] = field(default_factory=dict)
    revocations: dict[str, Revocation] = field(default_factory=dict)
    admin_consent_required: dict[str, bool] = field(default_factory=dict)  # lower-cased tenant id -> policy
    conditional_access_block: dict[str, bool] = field(default_factory=dict)  # lower-cased tenant id -> block
    # Application permissions (tenant-wide connection): (lower-cased tenant, client id) -> seq of the admin
    # consent; a revocation removes the entry and records its seq (app tokens issued before stop working).
    admin_consents: dict[tuple[str, str], int] = field(default_factory=dict)
    consent_revoked_at: dict[tuple[str, str], int] = field(default_factory=dict)
    auto_admin_consent: dict[str, bool] = field(default_factory=dict)
    access_policy: dict[str, list[str]] = field(default_factory=dict)  # tenant -> addresses apps may reach
    verified_domains: dict[str, list[str]] = field(default_factory=dict)  # tenant -> set by policy
    app_certificates: dict[str, list[Any]] = field(default_factory=dict)  # client id -> RegisteredCertificate
    seen_assertions: set[str] = field(default_factory=set)  # client assertion jti values (single use)
    _issued: int = 0

    def clear(self) -> None:
        for store in (self.codes, self.access, self.refresh, self.revocations, self.admin_consent_required,
                      self.conditional_access_block, self.admin_consents, self.consent_revoked_at,
                      self.auto_admin_consent, self.access_policy, self.verified_domains, self.app_certificates,
                      self.seen_assertions):
            store.clear()

    def grant(self, user_id: str, tenant_id: str, client_id: str, scopes: tuple[str, ...]) -> Grant:
        self.seq += 1
        return Grant(user_id, tenant_id, client_id, scopes, self.seq)

    def regrant(self, old: Grant, scopes: tuple[str, ...]) -> Grant:
        return self.grant(old.user_id, old.tenant_id, old.client_id, scopes)

    # --- codes --------------------------------------------------------------------------------

    def issue_code(self, grant: Grant, redirect_uri: str, challenge: str | None, method: str | None) -> str:
        self._prune()
        code = "0.A" + secrets.token_urlsafe(96)
        self.codes[code] = AuthCode(grant, redirect_uri, challenge, method,
                                     self.clock.time() + CODE_LIFETIME_S)
        return code

    # --- tokens -------------------------------------------------------------------------------

    def issue_access(self, grant: Grant, lifetime_s: int, *, name: str, upn: str, cp1: bool = False
                     ) -> tuple[str, int]:
        """A new access token and its `expires_in` in *real* seconds (clock.py: lifetime / speed)."""
        self._prune()
        now = self.clock.time()
        issued = int(now)
        header = {"typ": "JWT", "alg": "RS256", "kid": "sandbox", "x5t": "sandbox"}
        claims = {
            "aud": GRAPH_APP_ID, "iss": f"https://sts.windows.net/{grant.tenant_id}/", "iat": issued,
            "nbf": issued, "exp": issued + lifetime_s, "appid": grant.client_id, "idtyp": "user",
            "name": name, "oid": grant.user_id, "scp": " ".join(graph_scopes(grant.scopes)),
            "sub": _b64(hashlib.sha256(f"{grant.user_id}:{grant.client_id}".encode()).digest()),
            "tid": grant.tenant_id, "upn": upn, "uti": _b64(secrets.token_bytes(16)), "ver": "1.0",
        }
        if cp1:
            claims["xms_cc"] = ["cp1"]
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = _b64(hmac.new(self.key, signing_input.encode(), hashlib.sha256).digest() * 8)
        token = f"{signing_input}.{signature}"
        self.access[token] = AccessToken(grant, now + lifetime_s, cp1=cp1, issued_at=now)
        return token, self.clock.real_whole_seconds(lifetime_s)

    def issue_app_access(self, grant: Grant, lifetime_s: int) -> tuple[str, int]:
        """An app-only access token: `roles` instead of `scp`, `idtyp: app`, the service principal as `oid`."""
        self._prune()
        now = self.clock.time()
        issued = int(now)
        header = {"typ": "JWT", "alg": "RS256", "kid": "sandbox", "x5t": "sandbox"}
        claims = {
            "aud": "https://graph.microsoft.com", "iss": f"https://sts.windows.net/{grant.tenant_id}/",
            "iat": issued, "nbf": issued, "exp": issued + lifetime_s, "appid": grant.client_id, "idtyp": "app",
            "oid": grant.user_id, "sub": grant.user_id, "roles": list(grant.scopes), "tid": grant.tenant_id,
            "uti": _b64(secrets.token_bytes(16)), "ver": "1.0",
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = _b64(hmac.new(self.key, signing_input.encode(), hashlib.sha256).digest() * 8)
        token = f"{signing_input}.{signature}"
        self.access[token] = AccessToken(grant, now + lifetime_s, issued_at=now)
        return token, self.clock.real_whole_seconds(lifetime_s)

    # --- application permissions (admin consent) ------------------------------------------------

    def grant_admin_consent(self, tenant_id: str, client_id: str) -> None:
        self.seq += 1
        self.admin_consents[(tenant_id.lower(), client_id)] = self.seq

    def revoke_admin_consent(self, tenant_id: str) -> int:
        """Every application's admin consent in the tenant is withdrawn; returns how many there were."""
        self.seq += 1
        gone = [key for key in self.admin_consents if key[0] == tenant_id.lower()]
        for key in gone:
            del self.admin_consents[key]
            self.consent_revoked_at[key] = self.seq
        return len(gone)

    def admin_consented(self, tenant_id: str, client_id: str) -> bool:
        return (tenant_id.lower(), client_id) in self.admin_consents

    def app_grant(self, tenant_id: str, client_id: str) -> Grant:
        self.seq += 1
        return Grant(app_principal(tenant_id, client_id), tenant_id, client_id, APP_ROLES, self.seq, app_only=True)

    def app_consent_revoked(self, grant: Grant) -> bool:
        revoked = self.consent_revoked_at.get((grant.tenant_id.lower(), grant.client_id))
        return revoked is not None and grant.seq <= revoked

    def within_access_policy(self, tenant_id: str, mailbox_addresses: list[str]) -> bool:
        """No policy: every mailbox of the tenant; else only the listed addresses."""
        allowed = self.access_policy.get(tenant_id.lower())
        if allowed is None:
            return True
        wanted = {a.lower() for a in allowed}
        return any(a.lower() in wanted for a in mailbox_addresses)

    def issue_refresh(self, grant: Grant) -> str:
        token = "0.AX" + secrets.token_urlsafe(180)
        self.refresh[token] = RefreshToken(grant, self.clock.time() + REFRESH_LIFETIME_S)
        return token

    def id_token(self, grant: Grant, *, name: str, upn: str) -> str:
        issued = int(self.clock.time())
        claims = {
            "aud": grant.client_id, "iss": f"https://login.microsoftonline.com/{grant.tenant_id}/v2.0",
            "iat": issued, "nbf": issued, "exp": issued + 3600, "name": name, "oid": grant.user_id,
            "preferred_username": upn, "email": upn, "sub": _b64(hashlib.sha256(grant.user_id.encode()).digest()),
            "tid": grant.tenant_id, "ver": "2.0", "uti": _b64(secrets.token_bytes(16)),
        }
        header = {"typ": "JWT", "alg": "none"}
        return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."

    def check_access(self, token: str) -> tuple[AccessToken | None, str]:
        """(the token, "") when usable, else (token or None, why: missing | expired | revoked | policy).

        `revoked` and `policy` only ever concern cp1 tokens: without the capability, Graph keeps
        accepting a token until it expires, whatever happened to the user since. `app_revoked`: an app-only
        token issued before its tenant's admin consent was revoked (as continuous access evaluation for
        workload identities ends a deleted service principal's tokens)."""
        found = self.access.get(token)
        if found is None:
            return None, "missing"
        if found.expires_at <= self.clock.time():
            return found, "expired"
        if found.grant.app_only and self.app_consent_revoked(found.grant):
            return found, "app_revoked"
        if found.cp1:
            revocation = self.revoked(found.grant)
            if revocation is not None and revocation.reason in CAE_REASONS:
                return found, "revoked"
            if self.ca_blocked(found.grant.tenant_id):
                return found, "policy"
        return found, ""

    # --- revocation and policy -----------------------------------------------------------------

    def revoke(self, user_id: str, reason: str) -> tuple[int, int]:
        """Refresh tokens and codes issued to the user so far stop working. Returns (access tokens
        still live, of which cp1 tokens now challenged)."""
        self.seq += 1
        now = self.clock.time()
        self.revocations[user_id] = Revocation(self.seq, reason, now)
        live = [t for t in self.access.values() if t.grant.user_id == user_id and t.expires_at > now]
        return len(live), sum(1 for t in live if t.cp1 and reason in CAE_REASONS)

    def revoked(self, grant: Grant) -> Revocation | None:
        revocation = self.revocations.get(grant.user_id)
        return revocation if revocation is not None and grant.seq <= revocation.seq else None

    def consent_blocked(self, tenant_id: str, client_id: str) -> bool:
        """Users may not consent themselves, and no administrator has consented for the organisation yet
        (once one has, Microsoft lets every user of the tenant sign in to the app)."""
        return (self.admin_consent_required.get(tenant_id.lower(), False)
                and not self.admin_consented(tenant_id, client_id))

    def ca_blocked(self, tenant_id: str) -> bool:
        return self.conditional_access_block.get(tenant_id.lower(), False)

    def _prune(self) -> None:
        self._issued += 1
        if self._issued % 500:
            return
        now = self.clock.time()
        for name, store in (("codes", self.codes), ("access", self.access), ("refresh", self.refresh)):
            stale = [k for k, v in store.items() if v.expires_at + (3600 if name == "codes" else 0) < now]
            for k in stale:
                del store[k]


def describe(token: AccessToken) -> dict[str, Any]:
    return {"user_id": token.grant.user_id, "tenant_id": token.grant.tenant_id, "client_id": token.grant.client_id,
            "scopes": list(graph_scopes(token.grant.scopes))}


def new_trace_id() -> str:
    return str(uuid.uuid4())
