"""Graph change-notification subscriptions for a mailbox: create, store, delete."""

from __future__ import annotations

import contextlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.core.config import Settings
from services.core.graph.client import GraphClient
from services.core.graph.errors import NotFound


def mailbox_resource(graph_user_id: str) -> str:
    # The whole mailbox, not the inbox: inbox rules move client mail into any folder.
    return f"/users/{graph_user_id}/messages"


def expiry_iso(minutes: int) -> str:
    at = datetime.now(UTC) + timedelta(minutes=minutes)
    return at.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def parse_graph_time(value: str) -> datetime:
    """Graph writes 7 fractional digits; Python reads at most 6."""
    value = value.replace("Z", "+00:00")
    head, dot, tail = value.partition(".")
    if dot:
        digits = "".join(c for c in tail if c.isdigit())
        zone = tail[len(digits):]
        value = f"{head}.{digits[:6]}{zone}"
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def create_mailbox_subscription(
    db: asyncpg.Pool | asyncpg.Connection,
    graph: GraphClient,
    settings: Settings,
    *,
    token: str,
    connection_id: str,
    account_id: str,
    tenant_id: str,
    graph_user_id: str,
) -> dict[str, Any]:
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
    created = await graph.create_subscription(token, graph_user_id, body)
    # Store what Graph granted, not what we asked for.
    await db.execute(
        """INSERT INTO subscriptions (subscription_id, connection_id, account_id, tenant_id, resource,
                                      client_state, expires_at)
           VALUES ($1, $2::uuid, $3, $4, $5, $6, $7)""",
        created["id"], connection_id, account_id, tenant_id, created.get("resource", body["resource"]),
        client_state, parse_graph_time(created["expirationDateTime"]),
    )
    return created


async def delete_connection_subscriptions(
    db: asyncpg.Pool | asyncpg.Connection, graph: GraphClient, *, token: str | None, connection_id: str,
    graph_user_id: str,
) -> int:
    """Delete at Graph (a 404 means already gone) and locally; returns how many were removed."""
    rows = await db.fetch("SELECT subscription_id FROM subscriptions WHERE connection_id = $1::uuid",
                          connection_id)
    for row in rows:
        if token is not None:
            with contextlib.suppress(NotFound):
                await graph.delete_subscription(token, graph_user_id, row["subscription_id"])
        await db.execute("DELETE FROM subscriptions WHERE subscription_id = $1", row["subscription_id"])
    return len(rows)
