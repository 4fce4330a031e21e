"""oauth_states: a user's sign-in flows (single use, expiring, bound to the browser by a nonce's hash)."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from services.core.adapters.store.base import Repository


class OAuthStates(Repository):
    async def purge(self, older_than: timedelta, limit: int) -> int:
        """Remove states that expired over `older_than` ago (used or not), at most `limit`; concurrent calls
        skip each other's rows instead of waiting on them. Returns how many went."""
        result = await self._db.execute(
            "DELETE FROM oauth_states WHERE state_id IN (SELECT state_id FROM oauth_states"
            " WHERE expires_at < now() - $1::interval LIMIT $2 FOR UPDATE SKIP LOCKED)", older_than, limit)
        return int(str(result).rsplit(" ", 1)[-1] or 0)

    async def add(self, *, state_id: str, user_id: str, account_id: str, code_verifier: str, login_hint: str,
                  expires_at: datetime, nonce_hash: str) -> None:
        await self._db.execute(
            "INSERT INTO oauth_states (state_id, user_id, account_id, code_verifier, login_hint, expires_at,"
            " nonce_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            state_id, user_id, account_id, code_verifier, login_hint, expires_at, nonce_hash)

    async def consume(self, state_id: str) -> asyncpg.Record | None:
        """Mark the state used and return it, unless it was used already or has expired."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "UPDATE oauth_states SET used_at = now() WHERE state_id = $1 AND used_at IS NULL AND expires_at > now()"
            " RETURNING user_id, account_id, code_verifier, nonce_hash", state_id)
        return row

    async def record_signed_in_as(self, state_id: str, signed_in_as: str) -> None:
        await self._db.execute("UPDATE oauth_states SET signed_in_as = $2 WHERE state_id = $1", state_id,
                               signed_in_as)

    async def signed_in_as(self, state_id: str, user_id: str, account_id: str) -> str | None:
        value = await self._db.fetchval(
            "SELECT signed_in_as FROM oauth_states WHERE state_id = $1 AND user_id = $2 AND account_id = $3",
            state_id, user_id, account_id)
        return str(value) if value is not None else None
