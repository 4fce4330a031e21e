"""Graph change-notification subscriptions for a mailbox: create, store, delete."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.core.adapters.config import Settings
from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.errors import GraphError, NotFound
from services.core.adapters.graph.times import parse_graph_time as parse_graph_time  # re-exported
from services.core.adapters.store.subscriptions import Subscriptions


def mailbox_resource(graph_user_id: str) -> str:
    # The whole mailbox, not the inbox: inbox rules move client mail into any folder.
    return f"/users/{graph_user_id}/messages"


def expiry_iso(minutes: int) -> str:
    at = datetime.now(UTC) + timedelta(minutes=minutes)
    return at.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


async def create_mailbox_subscription(
    db: asyncpg.Pool,
    graph: GraphClient,
    settings: Settings,
    *,
    token: str,
    connection_id: str,
    account_id: str,
    tenant_id: str,
    graph_user_id: str,
    token_expires_at: datetime | None = None,
) -> dict[str, Any]:
    """`token_expires_at`: when `token` expires, i.e. until when Graph delivers without a reauthorization
    (stored as authorized_until; None when the caller does not know). `db` is a pool, never a transaction's
    connection (here and below): the Graph calls run between the statements, each committed on its own, so
    a subscription Graph created is stored even if the caller fails afterwards."""
    client_state = secrets.token_urlsafe(48)  # 64 chars, under Graph's 128
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": f"{settings.public_url}/graph/notifications",
        "lifecycleNotificationUrl": f"{settings.public_url}/graph/lifecycle",
        "resource": mailbox_resource(graph_user_id),
        "expirationDateTime": expiry_iso(settings.subscription_lifetime_min),
        "clientState": client_state,
        "latestSupportedTlsVersion": "v1_2",
    }
    created = await post_subscription(db, graph, token, graph_user_id, body)
    # Store what Graph granted, not what we asked for.
    await Subscriptions(db).add(
        subscription_id=created["id"], connection_id=connection_id, account_id=account_id, tenant_id=tenant_id,
        resource=created.get("resource", body["resource"]), client_state=client_state,
        expires_at=parse_graph_time(created["expirationDateTime"]), authorized_until=token_expires_at)
    return created


@contextlib.asynccontextmanager
async def subscribing(pool: asyncpg.Pool, connection_id: str, *, wait: bool) -> AsyncIterator[bool]:
    """One writer of a mailbox's subscriptions at a time, across processes: the connect flow (wait=True)
    and the renewer's "missing subscription" pass (wait=False: it skips a mailbox being subscribed). A
    session advisory lock on a held connection, no transaction: the Graph calls inside may refresh the
    token, which writes the connection row. Without it, a renewer tick between the connect's status
    change and its create made a second subscription for the same mailbox."""
    async with pool.acquire() as conn:
        lock = Subscriptions(conn)
        got = await lock.lock_subscribing(connection_id, wait=wait)
        try:
            yield got
        finally:
            if got:
                await lock.unlock_subscribing(connection_id)


CREATE_ATTEMPTS = 3


def _same_resource(live: dict[str, Any], body: dict[str, Any]) -> bool:
    """Graph may echo the resource with another case or without the leading slash."""
    return str(live.get("resource", "")).strip("/").lower() == str(body["resource"]).strip("/").lower()


async def post_subscription(db: asyncpg.Pool, graph: GraphClient, token: str,
                       graph_user_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST /subscriptions without leaving orphans: when an attempt fails in a way that may have created the
    subscription anyway (a timeout, a 5xx), look for it before trying again. Ours (same clientState) is
    adopted; any other of this mailbox's subscriptions to our URL that we do not know is an orphan of an
    earlier attempt and is deleted, so it cannot keep notifying with a clientState nobody has."""
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            return await graph.create_subscription(token, graph_user_id, body)
        except GraphError as exc:
            if not exc.transient:
                raise
            failure = exc
        # Give an attempt Graph may still be completing (it validates the URL first) time to land.
        await asyncio.sleep(failure.retry_after or float(attempt))
        for live in await graph.list_subscriptions(token, graph_user_id):
            if live.get("notificationUrl") != body["notificationUrl"] or not _same_resource(live, body):
                continue
            if live.get("clientState") == body["clientState"]:
                return live
            if not await Subscriptions(db).known(str(live.get("id"))):
                with contextlib.suppress(NotFound):
                    await graph.delete_subscription(token, graph_user_id, str(live["id"]))
    raise failure


async def delete_connection_subscriptions(
    db: asyncpg.Pool, graph: GraphClient, *, token: str | None, connection_id: str,
    graph_user_id: str,
) -> int:
    """Delete at Graph (a 404 means already gone) and locally; returns how many were removed."""
    subscriptions = Subscriptions(db)
    ids = await subscriptions.ids_of_connection(connection_id)
    for subscription_id in ids:
        if token is not None:
            with contextlib.suppress(NotFound):
                await graph.delete_subscription(token, graph_user_id, subscription_id)
        await subscriptions.forget(subscription_id)
    return len(ids)


# --- disconnect: subscriptions pending deletion ------------------------------------------------------
# A disconnect commits first (tokens wiped, status set, subscriptions moved to `subscription_deletions`),
# then deletes at Graph with the access token it read before the wipe. A moved row is never renewed nor
# trusted again (both read `subscriptions` only); what Graph did not confirm waits for the renewer.

async def mark_for_deletion(conn: asyncpg.Connection, connection_id: str) -> list[str]:
    """Inside the caller's transaction: every subscription of the connection becomes pending deletion."""
    return await Subscriptions(conn).mark_for_deletion(connection_id)


async def deletion_failed(db: asyncpg.Pool | asyncpg.Connection, subscription_id: str, error_code: str) -> None:
    await Subscriptions(db).deletion_failed(subscription_id, error_code)


async def deletion_done(db: asyncpg.Pool | asyncpg.Connection, subscription_id: str) -> None:
    await Subscriptions(db).deletion_done(subscription_id)


async def delete_pending(db: asyncpg.Pool, graph: GraphClient, *, token: str, graph_user_id: str,
                         subscription_ids: list[str]) -> list[str]:
    """Outside any transaction: DELETE at Graph (404: already gone), forget what Graph confirmed, record
    why the others failed. Returns the ids still pending."""
    subscriptions = Subscriptions(db)
    still: list[str] = []
    for subscription_id in subscription_ids:
        try:
            with contextlib.suppress(NotFound):
                await graph.delete_subscription(token, graph_user_id, subscription_id)
        except GraphError as exc:
            still.append(subscription_id)
            await subscriptions.deletion_failed(subscription_id, exc.classified.error_code)
            continue
        await subscriptions.deletion_done(subscription_id)
    return still
