"""Rows a test writes directly, for what it checks below the services (no Graph, no sign-in)."""

from __future__ import annotations

import asyncpg


async def connected_row(db: asyncpg.Pool, account_id: str, user_id: str) -> str:
    """A `connected` mailbox_connections row without tokens or subscriptions; returns its connection_id."""
    return str(await db.fetchval(
        "INSERT INTO mailbox_connections (account_id, user_id, status, connected_at) VALUES ($1, $2, 'connected',"
        " now()) RETURNING connection_id", account_id, user_id))
