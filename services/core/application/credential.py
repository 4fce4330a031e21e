"""azure-core's AsyncTokenCredential over a mailbox connection's tokens in PostgreSQL.

Lets the msgraph SDK (or any azure-core client) use the delegated tokens mailsync stores, with
the same refresh-ahead, single-refresher and status rules as every other Graph call.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken

from services.core.application.connections import TokenService


def _claims(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) and value else None


class ConnectionCredential:
    def __init__(self, tokens: TokenService, connection_id: str) -> None:
        self._tokens = tokens
        self._connection_id = connection_id

    async def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                        enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        # A claims challenge means Graph revoked the token early (CAE): refresh now, passing the claims
        # (azure-core hands them over decoded, as a JSON string) on to the token endpoint with cp1.
        token, expires_at = await self._tokens.access_token_with_expiry(
            self._connection_id, force_refresh=claims is not None, claims=_claims(claims))
        return AccessToken(token, int(expires_at.timestamp()))

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> ConnectionCredential:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None = None, exc_value: BaseException | None = None,
                        traceback: TracebackType | None = None) -> None:
        return None
