"""The identity platform's token endpoint: code exchange and refresh, errors classified.

Every token request declares the `cp1` client capability (`claims` parameter, services.core.adapters.graph.claims),
so Graph revokes mailsync's access tokens at once after a password reset or a Conditional Access change
and says so with a claims challenge, instead of letting them work for up to 90 minutes.

Refresh tokens: each refresh returns a new one, which is stored (TokenService.store); Microsoft does not
revoke the one used, so nothing here assumes a refresh token is single-use. When an answer carries no
refresh token, the one sent stays valid and is kept.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt

from services.core.adapters import txguard
from services.core.adapters.config import Settings
from services.core.adapters.graph.claims import token_request_claims
from services.core.adapters.graph.errors import GraphError, classify_identity_error


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime
    scopes: tuple[str, ...]
    tenant_id: str = ""


def id_token_claims(id_token: str) -> dict[str, Any]:
    """Claims of an id_token received straight from the token endpoint over verified TLS: OpenID Connect
    Core 3.1.3.7 lets such a client skip the signature check (TLS authenticates the issuer)."""
    try:
        claims = jwt.decode(id_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class IdentityClient:
    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._settings = settings

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def session(self) -> aiohttp.ClientSession:
        """The verifying session (services.core.adapters.tls) the app credential's transport shares."""
        return self._session

    def _endpoint(self, tenant: str | None, leaf: str) -> str:
        return f"{self._settings.login_url}/{tenant or self._settings.tenant}/oauth2/v2.0/{leaf}"

    def authorize_url(self, *, state: str, challenge: str, redirect_uri: str, login_hint: str | None) -> str:
        query = {
            "client_id": self._settings.client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "response_mode": "query",
            "scope": " ".join(self._settings.scopes),
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if login_hint:
            query["login_hint"] = login_hint
        return f"{self._endpoint(None, 'authorize')}?{urlencode(query)}"

    async def exchange_code(self, code: str, verifier: str, redirect_uri: str) -> TokenSet:
        return await self._token(None, {
            "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": redirect_uri,
        })

    async def refresh(self, refresh_token: str, tenant: str | None,
                      claims: Mapping[str, Any] | None = None) -> TokenSet:
        """`claims`: what a claims challenge asked for (decoded JSON), merged with the cp1 declaration."""
        return await self._token(tenant, {"grant_type": "refresh_token", "refresh_token": refresh_token},
                                 claims=claims)

    async def _token(self, tenant: str | None, form: dict[str, str],
                     claims: Mapping[str, Any] | None = None) -> TokenSet:
        txguard.check("identity token endpoint")
        form = {
            **form,
            "client_id": self._settings.client_id,
            "client_secret": self._settings.client_secret,
            "scope": " ".join(self._settings.scopes),
        }
        requested = token_request_claims(claims, self._settings.client_capabilities)
        if requested is not None:
            form["claims"] = requested
        try:
            async with self._session.post(
                self._endpoint(tenant, "token"), data=form, timeout=aiohttp.ClientTimeout(total=20)
            ) as resp:
                try:
                    body: Any = await resp.json(content_type=None)
                except ValueError:
                    body = None
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GraphError(classify_identity_error(None, None)) from exc
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            raise GraphError(classify_identity_error(status, body if isinstance(body, dict) else None), status)
        expires_in = int(body.get("expires_in", 3600))
        return TokenSet(
            access_token=str(body["access_token"]),
            refresh_token=str(body.get("refresh_token", form.get("refresh_token", ""))),
            expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
            scopes=tuple(str(body.get("scope", "")).split()),
            tenant_id=str(id_token_claims(str(body.get("id_token", ""))).get("tid", "")),
        )
