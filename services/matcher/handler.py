"""message.changed → fetch, match, persist. The only place mail becomes engagements.

A batch of notifications is handled in three steps: what the batch's mailboxes need is read once
(``load_mailboxes``); each message is fetched from Graph (``handle_message_changed``, concurrently); the
fetched messages are then decided together on one directory snapshot and stored in one transaction
(``services.core.application.matching.decide_and_store``, called by ``services.matcher.consumer``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import asyncpg
from prometheus_client import Counter

from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.errors import GraphError, NotFound
from services.core.adapters.store.mailbox.owners import MailboxOwners
from services.core.application.connections import Connection, NotConnected, TokenService
from services.core.application.engagements import Unseen
from services.core.application.mail_policy import MailPolicy
from services.core.application.matching import ToDecide
from services.core.domain import capture
from services.core.domain.events import BadEvent, require_str
from services.core.domain.model import MailboxOwner, MailMessage
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
    unseen: Unseen | None = None  # why the message could not be fetched, to be recorded with the batch


@dataclass(frozen=True)
class Mailbox:
    """What a batch reads once about one connection: the mailbox, its owner and the policy of its mail."""

    connection: Connection
    owner: MailboxOwner
    policy: MailPolicy
    directory_email: str  # the users row's primary address ('' without one)


@dataclass(frozen=True)
class Fetched:
    """A message read from Graph, waiting to be decided with the rest of its batch."""

    mailbox: Mailbox
    message: MailMessage
    source: str
    job_id: str | None


@dataclass(frozen=True)
class BatchView:
    """The per-batch context ``handle_message_changed`` runs in."""

    deps: MatcherDeps
    mailboxes: dict[str, Mailbox]


def connection_ids(values: Iterable[dict[str, Any]]) -> list[str]:
    """The connections a batch's notifications name (the ones that can be looked up at all)."""
    ids: set[str] = set()
    for value in values:
        connection_id = value.get("connection_id")
        if value.get("type") != "message.changed" or not isinstance(connection_id, str):
            continue
        try:
            ids.add(str(uuid.UUID(connection_id)))
        except ValueError:
            continue  # not a connection id at all: the record is reported as unknown
    return sorted(ids)


async def load_mailboxes(pool: asyncpg.Pool | asyncpg.Connection, ids: list[str]) -> dict[str, Mailbox]:
    """The batch's connections with their owners' addresses (Graph's proxyAddresses plus the directory's primary
    and aliases) and policies (the account's defaults when the host never sent account.upserted), in one read."""
    out: dict[str, Mailbox] = {}
    for row in await MailboxOwners(pool).for_matching(ids):
        connection = Connection.from_row(row)
        policy = MailPolicy(capture=capture.parse(row["capture"]), exclude_automated=bool(row["exclude_automated"]),
                            never_log=frozenset(row["never_log"] or ())) if row["has_account"] else MailPolicy()
        owner = MailboxOwner(connection.user_id, connection.account_id,
                             frozenset(connection.mailbox_addresses) | frozenset(row["user_addresses"]),
                             never_log=policy.never_log)
        out[connection.connection_id] = Mailbox(connection, owner, policy, row["directory_email"] or "")
    return out


async def _fetch(deps: MatcherDeps, connection_id: str, mailbox: str, message_id: str,
                 policy: MailPolicy) -> tuple[str, dict[str, Any]]:
    # One GET per message whatever the policy: the headers (for automated mail) and the body preview (for the
    # preview tier) ride in the same request's $select, only for accounts that need them (docs/design.md#automated).
    path = f"/users/{quote(mailbox, safe='@')}/messages/{quote(message_id, safe='')}"
    select = message_select(headers=policy.exclude_automated, preview=policy.capture.keeps_preview())

    async def get(token: str) -> tuple[str, dict[str, Any]]:
        return token, await deps.graph.request("GET", path, token, mailbox=mailbox, params={"$select": select})

    return await deps.tokens.call(connection_id, get)


async def handle_message_changed(event: dict[str, Any], batch: BatchView) -> Handled | Fetched:
    """Fetch one notified message. Raises GraphError (transient) to have the batch retried; BadEvent for poison
    records. A message that cannot be fetched comes back as a Handled carrying why (recorded with the batch)."""
    connection_id = require_str(event, "connection_id")
    message_id = require_str(event, "message_id")
    source = str(event.get("source") or "webhook")
    if event.get("change_type") == "deleted":
        return Handled(Outcome.SKIPPED)  # a deleted email stays on the timeline; nothing to fetch
    try:
        mailbox = batch.mailboxes.get(str(uuid.UUID(connection_id)))
    except ValueError:
        raise BadEvent("connection_id is not a connection id (a UUID)") from None
    graph_mailbox = mailbox.connection.graph_user_id if mailbox else None
    if mailbox is None or graph_mailbox is None:
        log.info("notification for unknown connection dropped", extra={"connection_id": connection_id})
        return Handled(Outcome.SKIPPED)
    deps, connection, policy = batch.deps, mailbox.connection, mailbox.policy
    connection_id = connection.connection_id

    def unseen(code: str, detail: str) -> Unseen:
        return Unseen(connection.account_id, connection.user_id, connection_id, message_id, code, detail, source)

    try:
        if connection.status != "connected":
            deps.tokens.forget(connection_id)
            raise NotConnected(connection_id, connection.status)
        token, body = await _fetch(deps, connection_id, graph_mailbox, message_id, policy)
    except NotConnected as exc:
        DECISIONS.labels("not_seen", "not_connected").inc()
        return Handled(Outcome.SKIPPED, unseen=unseen(
            "not_connected", f"The mailbox connection was {exc.status} when this message was "
            "notified; it is imported when the mailbox reconnects."))
    except NotFound:
        DECISIONS.labels("not_seen", "message_not_found").inc()
        return Handled(Outcome.NOT_FOUND, synced=connection_id, unseen=unseen(
            "message_not_found", "Graph no longer had this message when mailsync fetched it "
            "(deleted or moved before it could be read)."))
    except GraphError as exc:
        if exc.transient:
            raise  # the batch is retried with back-off
        DECISIONS.labels("not_seen", "fetch_refused").inc()
        return Handled(Outcome.NOT_FOUND, unseen=unseen(
            "fetch_refused", f"Microsoft Graph refused to return this message ({exc.classified.error_code})."))
    try:
        folder = await deps.folders.name_of(token, graph_mailbox, str(body.get("parentFolderId") or ""))
        message = parse_message(body, folder=folder)
    except UnusableMessage as exc:
        raise BadEvent(str(exc)) from None
    job_id = event.get("job_id")
    return Fetched(mailbox, message, source, job_id if isinstance(job_id, str) else None)


def to_decide(fetched: Fetched) -> ToDecide:
    """The fetched message as one mailbox's copy to decide."""
    mailbox = fetched.mailbox
    connection = mailbox.connection
    return ToDecide(mailbox.owner, mailbox.policy, connection.connection_id, fetched.message, fetched.source,
                    mailbox_address=connection.mailbox_address, directory_email=mailbox.directory_email)


__all__ = ["BatchView", "Fetched", "GraphError", "Handled", "Mailbox", "MatcherDeps", "Outcome",
           "handle_message_changed", "load_mailboxes", "to_decide"]
