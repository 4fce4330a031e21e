"""message.changed → fetch, match, persist. The only place mail becomes engagements."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import asyncpg
from prometheus_client import Counter

from services.core import engagements
from services.core.connections import NotConnected, TokenService, get_connection
from services.core.directory_lookup import load_snapshot, owner_addresses
from services.core.domain import Decision, MailboxOwner
from services.core.events import BadEvent, require_str
from services.core.graph.client import GraphClient
from services.core.graph.errors import GraphError, NotFound
from services.core.mail_policy import MailPolicy, load_policy
from services.core.matching import addresses_to_look_up, decide
from services.matcher.folders import FolderResolver
from services.matcher.graph_message import UnusableMessage, message_select, parse_message

log = logging.getLogger(__name__)

DECISIONS = Counter("mailsync_match_decisions_total", "Match decisions by decision and first reason",
                    ["decision", "reason"])
ENGAGEMENTS_CREATED = Counter("mailsync_engagements_created_total", "Engagements created")


class Outcome(StrEnum):
    MATCHED = "matched"
    NOT_MATCHED = "not_matched"
    EXCLUDED = "excluded"
    NOT_FOUND = "not_found"
    SKIPPED = "skipped"


@dataclass
class MatcherDeps:
    pool: asyncpg.Pool
    graph: GraphClient
    tokens: TokenService
    folders: FolderResolver


@dataclass(frozen=True)
class Handled:
    outcome: Outcome
    engagement_id: str | None = None
    needs_publish: bool = False
    synced: str | None = None  # the connection whose mailbox answered: its last successful sync moves


async def _fetch(deps: MatcherDeps, connection_id: str, mailbox: str, message_id: str,
                 policy: MailPolicy) -> tuple[str, dict[str, Any]]:
    # One GET per message whatever the policy: the headers (for automated mail) and the body preview (for the
    # preview tier) ride in the same request's $select, only for accounts that need them (docs/design.md#automated).
    path = f"/users/{quote(mailbox, safe='@')}/messages/{quote(message_id, safe='')}"
    select = message_select(headers=policy.exclude_automated, preview=policy.capture.keeps_preview())

    async def get(token: str) -> tuple[str, dict[str, Any]]:
        return token, await deps.graph.request("GET", path, token, mailbox=mailbox, params={"$select": select})

    return await deps.tokens.call(connection_id, get)


async def handle_message_changed(event: dict[str, Any], deps: MatcherDeps) -> Handled:
    """Raises GraphError (transient) to have the batch retried; BadEvent for poison records."""
    connection_id = require_str(event, "connection_id")
    message_id = require_str(event, "message_id")
    source = str(event.get("source") or "webhook")
    if event.get("change_type") == "deleted":
        return Handled(Outcome.SKIPPED)  # a deleted email stays on the timeline; nothing to fetch
    connection = await get_connection(deps.pool, connection_id)
    if connection is None or connection.graph_user_id is None:
        log.info("notification for unknown connection dropped", extra={"connection_id": connection_id})
        return Handled(Outcome.SKIPPED)
    mailbox = connection.graph_user_id
    common = {"account_id": connection.account_id, "user_id": connection.user_id, "connection_id": connection_id}
    policy = await load_policy(deps.pool, connection.account_id, connection.user_id)
    try:
        if connection.status != "connected":
            deps.tokens.forget(connection_id)
            raise NotConnected(connection_id, connection.status)
        token, body = await _fetch(deps, connection_id, mailbox, message_id, policy)
    except NotConnected as exc:
        DECISIONS.labels("not_seen", "not_connected").inc()
        await engagements.record_unseen(deps.pool, **common, message_id=message_id, code="not_connected",
                                        detail=f"The mailbox connection was {exc.status} when this message was "
                                        "notified; it is imported when the mailbox reconnects.", source=source)
        return Handled(Outcome.SKIPPED)
    except NotFound:
        DECISIONS.labels("not_seen", "message_not_found").inc()
        await engagements.record_unseen(deps.pool, **common, message_id=message_id, code="message_not_found",
                                        detail="Graph no longer had this message when mailsync fetched it "
                                        "(deleted or moved before it could be read).", source=source)
        return Handled(Outcome.NOT_FOUND, synced=connection_id)
    except GraphError as exc:
        if exc.transient:
            raise  # the batch is retried with back-off
        DECISIONS.labels("not_seen", "fetch_refused").inc()
        await engagements.record_unseen(deps.pool, **common, message_id=message_id, code="fetch_refused",
                                        detail="Microsoft Graph refused to return this message "
                                        f"({exc.classified.error_code}).", source=source)
        return Handled(Outcome.NOT_FOUND)
    try:
        folder = await deps.folders.name_of(token, mailbox, str(body.get("parentFolderId") or ""))
        message = parse_message(body, folder=folder)
    except UnusableMessage as exc:
        raise BadEvent(str(exc)) from None
    owner = MailboxOwner(connection.user_id, connection.account_id,
                         await owner_addresses(deps.pool, connection.user_id, connection.mailbox_addresses),
                         never_log=policy.never_log)
    snapshot = await load_snapshot(deps.pool, connection.account_id, addresses_to_look_up(message, owner))
    result = decide(message, owner, replace(snapshot, exclude_automated=policy.exclude_automated))
    DECISIONS.labels(result.decision.value, result.reasons[0].code if result.reasons else "").inc()
    async with deps.pool.acquire() as conn, conn.transaction():
        if result.decision is not Decision.MATCHED:
            await engagements.record_decision(conn, **common, message=message, result=result, source=source,
                                              engagement_id=None, capture=policy.capture)
            return Handled(Outcome(result.decision.value), synced=connection_id)
        stored = await engagements.store_engagement(conn, **common, message=message, result=result, source=source,
                                                    capture=policy.capture, mailbox_address=connection.mailbox_address)
    if stored.created:
        ENGAGEMENTS_CREATED.inc()
        if isinstance(event.get("job_id"), str):
            await deps.pool.execute("UPDATE sync_jobs SET engagements_created = engagements_created + 1"
                                    " WHERE job_id::text = $1", event["job_id"])
    return Handled(Outcome.MATCHED, stored.engagement_id, stored.needs_publish, synced=connection_id)


__all__ = ["GraphError", "Handled", "MatcherDeps", "Outcome", "handle_message_changed"]
