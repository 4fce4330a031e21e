"""The hourly safety net: a delta query per folder (all but drafts, junk, deleted items, outbox),
delta links stored per folder, anything not yet seen sent to the matcher."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg
from prometheus_client import Counter

from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.errors import DeltaExpired, GraphError, NotFound
from services.core.adapters.kafka import Publisher
from services.core.adapters.store.jobs import SyncJobs
from services.core.adapters.store.mailbox.polls import Polls
from services.core.application.connections import Connection, NotConnected, TokenService, get_connection
from services.core.domain.matching import EXCLUDED_FOLDERS
from services.core.domain.schedule import iso, next_poll_at
from services.renewer.notify import publish_found

log = logging.getLogger(__name__)

EXCLUDED = tuple(sorted(EXCLUDED_FOLDERS))  # the matching rules' catalog: never polled
BATCH = 20
POLLS = Counter("mailsync_delta_polls_total", "Mailbox delta polls by outcome", ["outcome"])
FOUND = Counter("mailsync_delta_found_total", "Messages the delta poll found that push had not delivered")
RESTARTS = Counter("mailsync_delta_restarts_total", "Folders restarted after their delta state expired")


@dataclass
class PollDeps:
    pool: asyncpg.Pool
    graph: GraphClient
    tokens: TokenService
    publisher: Publisher
    interval: timedelta
    relist_window: timedelta  # how far back a first or restarted folder looks
    excluded_ids: dict[str, set[str]] = field(default_factory=dict)
    # The repositories the poll and the sync jobs use, on the pool (one short statement each, never a
    # transaction around a Graph call); a unit test puts in-memory fakes in their place.
    polls: Polls = field(init=False)
    jobs: SyncJobs = field(init=False)

    def __post_init__(self) -> None:
        self.polls, self.jobs = Polls(self.pool), SyncJobs(self.pool)


def first_delta_url(user: str, folder_id: str, since: datetime) -> str:
    query = urlencode({"$select": "id", "$filter": f"receivedDateTime ge {iso(since)}"}, safe="$")
    return f"/users/{quote(user, safe='@')}/mailFolders/{quote(folder_id, safe='')}/messages/delta?{query}"


async def _run_delta(deps: PollDeps, token: str, user: str, url: str) -> tuple[list[str], str | None]:
    """Follow nextLinks to the deltaLink; returns the ids created or changed and the new deltaLink."""
    ids: list[str] = []
    link: str | None = url
    while link:
        page = await deps.graph.get_page(token, user, link)
        ids.extend(str(item["id"]) for item in page.get("value", []) if "@removed" not in item and "id" in item)
        if "@odata.deltaLink" in page:
            return ids, str(page["@odata.deltaLink"])
        link = page.get("@odata.nextLink")
    return ids, None


async def poll_mailbox(deps: PollDeps, connection: Connection) -> int:
    """One delta pass; a token Graph revoked early (401, or a claims challenge) gets one forced refresh
    with the challenge's claims, which decides the status (TokenService.call)."""
    return await deps.tokens.call(connection.connection_id, lambda token: _poll(deps, connection, token))


async def _excluded_folder_ids(deps: PollDeps, token: str, user: str) -> set[str]:
    """Ids of the excluded well-known folders (drafts, junk, deleted items, outbox, Sync Issues, ...): they
    never change, so asked once per mailbox."""
    known = deps.excluded_ids.get(user)
    if known is None:
        known = set()
        for name in EXCLUDED:
            try:
                known.add(str((await deps.graph.get_folder(token, user, name))["id"]))
            except NotFound:
                continue
        deps.excluded_ids[user] = known
    return known


def _page_ids(page: dict[str, Any]) -> list[str]:
    return [str(item["id"]) for item in page.get("value", []) if "@removed" not in item and "id" in item]


async def _poll(deps: PollDeps, connection: Connection, token: str) -> int:
    """One delta pass over every included folder; returns how many unseen messages were sent on.

    The first page of every folder goes out in JSON batches of 20 (an idle folder needs nothing
    more); later pages and restarts follow one by one."""
    assert connection.graph_user_id is not None
    cid, user = connection.connection_id, connection.graph_user_id
    polls = deps.polls
    excluded = await _excluded_folder_ids(deps, token, user)
    cursors = await polls.cursors(cid)
    now = datetime.now(UTC)
    folders = [f for f in await deps.graph.list_folders(token, user) if str(f["id"]) not in excluded]
    first_since = now - deps.relist_window
    links = [cursor.delta_link if (cursor := cursors.get(str(f["id"]))) else None for f in folders]
    if not all(links):
        first_since = await _first_listing_since(polls, cid, first_since)
    starts = [link or first_delta_url(user, str(f["id"]), first_since) for f, link in zip(folders, links, strict=True)]
    firsts: list[dict[str, Any] | GraphError] = []
    for chunk in range(0, len(starts), BATCH):
        firsts += await deps.graph.batch_get(token, user, starts[chunk:chunk + BATCH])
    sent = 0
    for folder, first in zip(folders, firsts, strict=True):
        folder_id = str(folder["id"])
        cursor = cursors.get(folder_id)
        restarted = False
        if isinstance(first, DeltaExpired):
            # Expired delta state: re-list this folder over a bounded window only.
            RESTARTS.inc()
            restarted = True
            since = (cursor.last_polled_at if cursor and cursor.last_polled_at else now) - deps.relist_window
            ids, link = await _run_delta(deps, token, user, first_delta_url(user, folder_id, since))
        elif isinstance(first, NotFound):
            continue  # the folder went away between the listing and its delta
        elif isinstance(first, GraphError):
            raise first
        else:
            ids, link = _page_ids(first), first.get("@odata.deltaLink")
            if "@odata.nextLink" in first:
                more, link = await _run_delta(deps, token, user, str(first["@odata.nextLink"]))
                ids += more
        unseen = await polls.undecided(cid, ids)
        await publish_found(deps.publisher, connection_id=cid, account_id=connection.account_id,
                            message_ids=unseen, source="delta")
        sent += len(unseen)
        await polls.save_cursor(cid, folder_id, folder_name=str(folder.get("displayName", "")), delta_link=link,
                                restarted=restarted)
    FOUND.inc(sent)
    return sent


async def _first_listing_since(polls: Polls, connection_id: str, relist_since: datetime) -> datetime:
    """How far back a folder's first delta looks: the relist window, but never before what the connection
    imports at all (the since of its first back-fill, else when it connected). Otherwise a first connection's
    first poll would import MAILSYNC_RELIST_WINDOW_H (48 h) of mail, not MAILSYNC_BACKFILL_FIRST_H (24 h)."""
    floor = await polls.import_floor(connection_id)
    return relist_since if floor is None else max(relist_since, floor)


async def claim_due(pool: asyncpg.Pool, *, limit: int, lease: timedelta) -> list[str]:
    """Mailboxes due for a poll, leased so no other replica polls them meanwhile (Polls.claim_due)."""
    return await Polls(pool).claim_due(limit=limit, lease=lease)


async def poll_claimed(deps: PollDeps, connection_id: str) -> None:
    """Poll one claimed mailbox. A successful poll moves last_synced_at to when it *started*: mail that
    arrives while it runs may be missed by it, and a reconnect's back-fill starts from last_synced_at."""
    connection = await get_connection(deps.pool, connection_id)
    started = datetime.now(UTC)
    outcome = "ok"
    try:
        if connection is not None and connection.status == "connected":
            await poll_mailbox(deps, connection)
    except NotConnected:
        outcome = "not_connected"  # the token service recorded and published why
    except Exception as exc:  # one mailbox's failure never stops the others
        outcome = "failed"
        log.warning("delta poll failed", extra={"connection_id": connection_id, "error": type(exc).__name__})
    finally:
        now = datetime.now(UTC)
        await deps.polls.finish(connection_id, next_poll_at=next_poll_at(connection_id, now, deps.interval),
                                succeeded=outcome == "ok", started=started)
        POLLS.labels(outcome).inc()
