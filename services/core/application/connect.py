"""Storing a user's grant after their sign-in: one short transaction (the identity exchange and /me came
before it; the status event and the Graph subscriptions come after its commit)."""

from __future__ import annotations

import asyncpg

from services.core.adapters.config import Settings
from services.core.adapters.graph.identity import TokenSet
from services.core.adapters.store.uow import UnitOfWork
from services.core.application.backfill import queue_backfill
from services.core.application.connections import TokenService


async def record_grant(pool: asyncpg.Pool, tokens_service: TokenService, settings: Settings, *, account_id: str,
                       user_id: str, tenant_id: str | None, graph_user_id: str, address: str | None,
                       aliases: list[str], tokens: TokenSet) -> str:
    """The user's connection with its mailbox, its sealed tokens and the back-fill of the gap, committed
    together. Returns the connection id."""
    async with UnitOfWork(pool) as uow:
        await uow.directory.ensure_account(account_id)
        last_synced_at = await uow.connections.last_synced_at(user_id)
        connection_id = await uow.connections.upsert_signed_in(
            account_id=account_id, user_id=user_id, tenant_id=tenant_id, graph_user_id=graph_user_id,
            address=address, aliases=aliases)
        await tokens_service.store(uow.conn, connection_id, tokens)
        await queue_backfill(uow.jobs, settings, connection_id, last_synced_at)
    return connection_id
