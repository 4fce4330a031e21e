"""A unit of work: one connection, one transaction, the repositories on it.

    async with UnitOfWork(pool) as uow:
        await uow.connections.wipe_tokens(connection_id)
        ...
    # committed here (rolled back if the block raised); only now call Graph, identity or Kafka

No network call belongs inside the block (services/core/adapters/txguard.py refuses one in tests). `uow.conn` is the
transaction's connection, for the services/core functions that still take one (status, tokens, outbox)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import asyncpg

from services.core.adapters.store.directory import Directory
from services.core.adapters.store.jobs import SyncJobs
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.adapters.store.outbox import Outbox
from services.core.adapters.store.subscriptions import Subscriptions
from services.core.adapters.store.tenants import SharedMailboxes, TenantConnections


class UnitOfWork:
    conn: asyncpg.Connection
    connections: MailboxConnections
    directory: Directory
    jobs: SyncJobs
    outbox: Outbox
    subscriptions: Subscriptions
    tenants: TenantConnections
    shared_mailboxes: SharedMailboxes

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._acquired: Any = None
        self._tx: Any = None

    async def __aenter__(self) -> UnitOfWork:
        self._acquired = self._pool.acquire()
        self.conn = await self._acquired.__aenter__()
        try:
            self._tx = self.conn.transaction()
            await self._tx.__aenter__()
        except BaseException:
            await self._acquired.__aexit__(None, None, None)
            raise
        conn = self.conn
        self.connections, self.directory, self.jobs = MailboxConnections(conn), Directory(conn), SyncJobs(conn)
        self.subscriptions, self.outbox = Subscriptions(conn), Outbox(conn)
        self.tenants, self.shared_mailboxes = TenantConnections(conn), SharedMailboxes(conn)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self._tx.__aexit__(exc_type, exc, tb)
        finally:
            await self._acquired.__aexit__(exc_type, exc, tb)
