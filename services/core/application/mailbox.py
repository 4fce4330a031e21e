"""A user's mailbox connection as the API and the settings page show it, and disconnecting it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.core.adapters.config import Settings
from services.core.adapters.crypto import TokenBox, TokenDecryptError
from services.core.adapters.graph.client import GraphClient
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.adapters.store.subscriptions import Subscriptions
from services.core.adapters.store.uow import UnitOfWork
from services.core.application.connections import StatusReporter
from services.core.application.subscriptions import delete_pending, deletion_failed, mark_for_deletion
from services.core.domain.model import ConnectionStatus

log = logging.getLogger(__name__)

DISCONNECTED_REASON = "You disconnected this mailbox; mailsync no longer reads it."
GRAPH_CLEANUP_S = 15.0  # the request waits this long at most for Graph; the renewer retries the rest


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def connection_view(pool: asyncpg.Pool, user_id: str, *, account_id: str | None = None
                          ) -> dict[str, Any] | None:
    """The user's connection as the API shows it; `account_id` (a scoped caller's) filters every query."""
    row = await MailboxConnections(pool).view_row(user_id, account_id)
    if row is None:
        return None
    subscriptions = Subscriptions(pool)
    subs = await subscriptions.of_connection(row["connection_id"], row["account_id"])
    pending = await subscriptions.pending_deletions(row["connection_id"], row["account_id"])
    return {
        "connection_id": str(row["connection_id"]), "user_id": row["user_id"], "account_id": row["account_id"],
        "status": row["status"], "reason": row["reason"], "error_code": row["error_code"],
        # "tenant": synced through the organisation's consent (no sign-in of the user); "user": their own.
        "mode": row["mode"],
        "scopes": list(row["scopes"]), "connected_at": _iso(row["connected_at"]),
        "last_synced_at": _iso(row["last_synced_at"]), "mailbox_address": row["mailbox_address"],
        "status_changed_at": _iso(row["status_changed_at"]),
        "subscriptions": [{"id": s["subscription_id"], "resource": s["resource"],
                           "expires_at": _iso(s["expires_at"])} for s in subs],
        # Subscriptions a disconnect could not delete at Graph yet: never renewed, their notifications
        # ignored; the renewer deletes them once it can, or forgets them after their expiry.
        "subscriptions_pending_delete": len(pending),
        "pending_deletions": [{"id": p["subscription_id"], "resource": p["resource"],
                               "expires_at": _iso(p["expires_at"]), "since": _iso(p["pending_since"]),
                               "attempts": p["attempts"], "last_error": p["last_error"]} for p in pending],
    }


def never_connected_view(user_id: str, account_id: str) -> dict[str, Any]:
    """A user of the directory who never connected a mailbox, as the API shows them."""
    return {"connection_id": None, "user_id": user_id, "account_id": account_id,
            "status": ConnectionStatus.NEVER_CONNECTED.value, "mode": "user", "reason": None,
            "error_code": None,
            "scopes": [], "connected_at": None, "last_synced_at": None, "subscriptions": [],
            "subscriptions_pending_delete": 0, "pending_deletions": []}


async def disconnect(pool: asyncpg.Pool, settings: Settings, status: StatusReporter, graph: GraphClient,
                     connection_id: str, *, account_id: str | None = None,
                     forget: Callable[[list[str]], None] = lambda _pending: None) -> bool:
    """Stop reading the mailbox. One short transaction wipes the tokens, sets `disconnected` and marks the
    subscriptions pending deletion; only after the commit are they deleted at Graph, best effort, with the
    access token read before the wipe (never refreshed: the user asked us to stop). What Graph did not
    confirm stays pending for the renewer. `forget(pending)` drops what the caller caches of the connection
    and its subscriptions. Returns False if the connection is unknown (to the caller)."""
    async with UnitOfWork(pool) as uow:
        row = await uow.connections.lock_for_disconnect(connection_id, account_id)
        if row is None:
            return False
        token = usable_access_token(settings, connection_id, row)
        await uow.connections.wipe_tokens(connection_id)
        changed = await status.record(uow.conn, connection_id, ConnectionStatus.DISCONNECTED, DISCONNECTED_REASON,
                                      None)
        pending = await mark_for_deletion(uow.conn, connection_id)
    forget(pending)
    if changed is not None:
        await status.publish(changed)  # after the commit: no network call inside the transaction
    if pending and token is None:
        for subscription_id in pending:  # visible as such in the status until a new grant or their expiry
            await deletion_failed(pool, subscription_id, "no_usable_access_token")
    elif pending and token is not None:
        try:
            async with asyncio.timeout(GRAPH_CLEANUP_S):
                await delete_pending(pool, graph, token=token, graph_user_id=row["graph_user_id"] or "",
                                     subscription_ids=pending)
        except TimeoutError:
            log.warning("subscriptions left pending deletion", extra={"connection_id": connection_id})
    return True


def usable_access_token(settings: Settings, connection_id: str, row: Any) -> str | None:
    """The stored access token if it is still valid, decrypted in memory only; never a refresh."""
    if row["access_token_enc"] is None or row["access_expires_at"] is None:
        return None
    if row["access_expires_at"] <= datetime.now(UTC) + timedelta(seconds=30):
        return None
    try:
        return TokenBox(settings.token_keys).decrypt(row["access_token_enc"], bound_to=connection_id)
    except TokenDecryptError:
        return None  # unreadable: the subscriptions die with their expiry at Graph
