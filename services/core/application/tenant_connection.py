"""The account's organisation-wide (tenant) connection as the API and /admin/email change it: open it (or a
fresh consent link), add and remove shared mailboxes. Each change commits in one short transaction; Kafka
and Graph are called only after the commit."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.core.adapters.config import Settings
from services.core.adapters.graph.errors import GraphError
from services.core.adapters.kafka import Publisher
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.adapters.store.tenants import SharedMailboxes, TenantConnections
from services.core.adapters.store.uow import UnitOfWork
from services.core.application import outbox, tenant_status
from services.core.application.tenant import (
    REASON_PENDING,
    TenantDeps,
    admin_consent_url,
    mailbox_counts,
    new_consent_state,
    unenrol,
    view,
)

_STATUS_FIELDS = ("status", "reason", "error_code")


class TenantConflict(Exception):
    """The account's tenant connection is fixed to another organisation; the message says so."""


async def open_tenant_connection(pool: asyncpg.Pool, settings: Settings, publisher: Publisher | None,
                                 account_id: str, tenant_id: str) -> dict[str, Any]:
    """Create the account's tenant connection, or renew its consent link: a fresh signed, single-use state
    (24 h) each call, so a link handed out earlier stays valid until used or expired. Raises TenantConflict
    for another tenant than the one fixed."""
    existing = await TenantConnections(pool).of_account(account_id)
    if existing is not None and existing["status"] in ("connected", "consent_revoked") and \
            existing["tenant_id"].lower() != tenant_id.lower():
        raise TenantConflict(f"the account's tenant connection is fixed to {existing['tenant_id']}; "
                             "DELETE it before connecting another organisation")
    async with UnitOfWork(pool) as uow:
        await uow.directory.ensure_account(account_id)
        row = await uow.tenants.open(account_id, tenant_id, REASON_PENDING)
        changed = existing is None or \
            tuple(existing[k] for k in _STATUS_FIELDS) != tuple(row[k] for k in _STATUS_FIELDS)
        ids = await tenant_status.record(uow.conn, row) if changed else []
        state = await new_consent_state(uow.conn, settings, str(row["tenant_connection_id"]), account_id,
                                        row["tenant_id"])
        counts = await mailbox_counts(uow.conn, str(row["tenant_connection_id"]))
    await outbox.publish_now(pool, publisher, ids)
    return view(row, counts, admin_consent_url(settings, row["tenant_id"], state))


async def add_shared_mailbox(pool: asyncpg.Pool, account_id: str, address: str) -> str:
    """Store the shared mailbox and bring the tenant connection's next pass (which enrols it) to now."""
    async with UnitOfWork(pool) as uow:
        await uow.directory.ensure_account(account_id)
        mailbox_id = await uow.shared_mailboxes.add(account_id, address)
        await uow.tenants.sync_soon(account_id)
    return mailbox_id


async def remove_shared_mailbox(deps: TenantDeps, account_id: str, mailbox_id: str) -> bool:
    """Forget the shared mailbox and stop reading it (its subscriptions deleted with an app token when one can
    be had). False when the account has no such shared mailbox."""
    if not await SharedMailboxes(deps.pool).remove(mailbox_id, account_id):
        return False
    connection = await MailboxConnections(deps.pool).of_shared_mailbox(mailbox_id, account_id)
    if connection is not None:
        token: str | None
        try:
            token, _ = await deps.app.token(connection["tenant_id"])
        except GraphError:
            token = None
        await unenrol(deps, str(connection["connection_id"]), token, "This shared mailbox was removed from mailsync.")
    return True
