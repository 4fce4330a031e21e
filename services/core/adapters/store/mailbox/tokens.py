"""A mailbox connection's sealed tokens (columns of mailbox_connections): stored, refreshed under a lease,
re-sealed with a new key. The tokens are encrypted before they reach this module (services/core/adapters/crypto.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from services.core.adapters.store.base import Repository


@dataclass(frozen=True, slots=True)
class TokenState:
    """What deciding how to get a connection's access token needs."""

    status: str
    access_token_enc: bytes | None
    refresh_token_enc: bytes | None
    access_expires_at: datetime | None
    mode: str
    tenant_id: str | None
    tenant_connection_id: str | None


@dataclass(frozen=True, slots=True)
class RefreshClaim:
    refresh_token_enc: bytes
    tenant_id: str | None


@dataclass(frozen=True, slots=True)
class SealedTokens:
    """A connection's two sealed tokens, either of them absent."""

    connection_id: str
    access_token_enc: bytes | None
    refresh_token_enc: bytes | None


@dataclass(frozen=True, slots=True)
class Expiring:
    connection_id: str
    access_expires_at: datetime


def _blob(value: bytes | None) -> bytes | None:
    return bytes(value) if value is not None else None


def _sealed(row: asyncpg.Record) -> SealedTokens:
    return SealedTokens(str(row["connection_id"]), _blob(row["access_token_enc"]), _blob(row["refresh_token_enc"]))


class MailboxTokens(Repository):
    async def state(self, connection_id: str) -> TokenState | None:
        row = await self._db.fetchrow(
            "SELECT status, access_token_enc, refresh_token_enc, access_expires_at, mode, tenant_id,"
            " tenant_connection_id FROM mailbox_connections WHERE connection_id = $1::uuid", connection_id)
        if row is None:
            return None
        tenant_connection_id = row["tenant_connection_id"]
        return TokenState(row["status"], _blob(row["access_token_enc"]), _blob(row["refresh_token_enc"]),
                          row["access_expires_at"], row["mode"], row["tenant_id"],
                          str(tenant_connection_id) if tenant_connection_id is not None else None)

    async def store(self, connection_id: str, access: bytes, refresh: bytes, expires_at: datetime,
                    scopes: Sequence[str]) -> None:
        """A new grant's tokens (a sign-in)."""
        await self._db.execute(
            """UPDATE mailbox_connections SET access_token_enc = $2, refresh_token_enc = $3,
                      access_expires_at = $4, scopes = $5, updated_at = now()
                WHERE connection_id = $1::uuid""",
            connection_id, access, refresh, expires_at, list(scopes))

    async def claim_refresh(self, connection_id: str, seen_expiry: datetime | None,
                            lease: timedelta) -> RefreshClaim | None:
        """The refresh lease, taken only while the access token is still the one seen (`seen_expiry`) and no
        other lease stands; None otherwise (or when the connection cannot be refreshed)."""
        row = await self._db.fetchrow(
            """UPDATE mailbox_connections SET refresh_lease_until = now() + $3::interval
                WHERE connection_id = $1::uuid AND status = 'connected' AND refresh_token_enc IS NOT NULL
                  AND access_expires_at IS NOT DISTINCT FROM $2
                  AND (refresh_lease_until IS NULL OR refresh_lease_until < now())
            RETURNING refresh_token_enc, tenant_id""", connection_id, seen_expiry, lease)
        return RefreshClaim(bytes(row["refresh_token_enc"]), row["tenant_id"]) if row is not None else None

    async def release_refresh(self, connection_id: str) -> None:
        await self._db.execute("UPDATE mailbox_connections SET refresh_lease_until = NULL"
                               " WHERE connection_id = $1::uuid", connection_id)

    async def record_refresh(self, connection_id: str, access: bytes, refresh: bytes, expires_at: datetime,
                             scopes: Sequence[str]) -> bool:
        """The refreshed tokens, releasing the lease; only while still connected and the lease stands (a
        disconnect during the call wiped the tokens and the lease, and its wipe wins). False when not stored."""
        stored = await self._db.fetchval(
            """UPDATE mailbox_connections SET access_token_enc = $2, refresh_token_enc = $3,
                      access_expires_at = $4, scopes = $5, refresh_lease_until = NULL, updated_at = now()
                WHERE connection_id = $1::uuid AND status = 'connected' AND refresh_lease_until IS NOT NULL
            RETURNING 1""", connection_id, access, refresh, expires_at, list(scopes))
        return bool(stored)

    async def expiring(self, within: timedelta, limit: int) -> list[Expiring]:
        """Connected mailboxes whose access token expires within `within`, soonest first."""
        rows = await self._db.fetch(
            """SELECT connection_id, access_expires_at FROM mailbox_connections
                WHERE status = 'connected' AND access_expires_at < now() + $1::interval
                ORDER BY access_expires_at LIMIT $2""", within, limit)
        return [Expiring(str(r["connection_id"]), r["access_expires_at"]) for r in rows]

    async def marked_unreadable(self, limit: int) -> list[SealedTokens]:
        """Connections marked reconnect_required because their tokens could not be read, oldest first."""
        rows = await self._db.fetch(
            """SELECT connection_id, access_token_enc, refresh_token_enc FROM mailbox_connections
                WHERE status = 'reconnect_required' AND error_code = 'token_unreadable'
                ORDER BY status_changed_at LIMIT $1""", limit)
        return [_sealed(r) for r in rows]

    async def lock_still_unreadable(self, tokens: SealedTokens) -> bool:
        """Inside the caller's transaction: the row locked if it is still marked unreadable with the same
        tokens (the user may have reconnected or disconnected meanwhile)."""
        still = await self._db.fetchval(
            """SELECT 1 FROM mailbox_connections WHERE connection_id = $1::uuid
                  AND status = 'reconnect_required' AND error_code = 'token_unreadable'
                  AND access_token_enc IS NOT DISTINCT FROM $2 AND refresh_token_enc IS NOT DISTINCT FROM $3
                  FOR UPDATE""", tokens.connection_id, tokens.access_token_enc, tokens.refresh_token_enc)
        return bool(still)

    async def lock_not_sealed_with(self, key_prefix: str, limit: int) -> list[SealedTokens]:
        """Inside the caller's transaction: up to `limit` connections with a token not sealed under the key
        whose blobs start with `key_prefix`, locked (rows another rotation holds are skipped)."""
        rows = await self._db.fetch(
            """SELECT connection_id, access_token_enc, refresh_token_enc FROM mailbox_connections
                WHERE (access_token_enc IS NOT NULL AND NOT starts_with(encode(access_token_enc, 'escape'), $1))
                   OR (refresh_token_enc IS NOT NULL AND NOT starts_with(encode(refresh_token_enc, 'escape'), $1))
                LIMIT $2 FOR UPDATE SKIP LOCKED""", key_prefix, limit)
        return [_sealed(r) for r in rows]

    async def reseal(self, tokens: SealedTokens) -> None:
        """The same tokens sealed again (no other column changes)."""
        await self._db.execute("UPDATE mailbox_connections SET access_token_enc = $2, refresh_token_enc = $3"
                               " WHERE connection_id = $1::uuid", tokens.connection_id, tokens.access_token_enc,
                               tokens.refresh_token_enc)
