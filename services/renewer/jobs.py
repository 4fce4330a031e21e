"""Back-fill after (re)connect and back-syncs on request: list messages by receivedDateTime windows,
newest first, storing the cursor after every page so a crashed job resumes where it stopped."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg
from prometheus_client import Counter

from services.core.adapters.graph.errors import AccessTokenRejected, GraphError
from services.core.adapters.store.jobs import SyncJobs
from services.core.application.connections import NotConnected, get_connection
from services.core.domain.addresses import normalize_address
from services.core.domain.schedule import estimate_total, iso
from services.renewer.delta import PollDeps
from services.renewer.notify import publish_found

log = logging.getLogger(__name__)

JOBS = Counter("mailsync_sync_jobs_total", "Back-fill and back-sync jobs by kind and outcome", ["kind", "outcome"])
WINDOW = timedelta(days=1)
LEASE = timedelta(minutes=2)


ESTIMATE_SELECT = "id,receivedDateTime,from,sender,toRecipients,ccRecipients,bccRecipients,replyTo"


def window_url(user: str, start: Any, end: Any, select: str = "id,receivedDateTime") -> str:
    query = urlencode({"$select": select, "$top": "100",
                       "$filter": f"receivedDateTime ge {iso(start)} and receivedDateTime lt {iso(end)}"}, safe="$")
    return f"/users/{quote(user, safe='@')}/messages?{query}"


async def claim_job(pool: asyncpg.Pool) -> asyncpg.Record | None:
    """The next job to run, leased (SyncJobs.claim_next says which)."""
    return await SyncJobs(pool).claim_next(LEASE)


class Paused(Exception):
    """The renewer is stopping: the job's cursor is stored; its lease is released for another replica."""


async def run_job(deps: PollDeps, job: asyncpg.Record, stop: asyncio.Event | None = None) -> None:
    job_id, kind = str(job["job_id"]), job["kind"]
    jobs = deps.jobs
    connection = await get_connection(deps.pool, str(job["connection_id"]))
    try:
        if connection is None or connection.graph_user_id is None or connection.status != "connected":
            raise NotConnected(str(job["connection_id"]), connection.status if connection else "unknown")
        try:
            await _run(deps, job, connection.graph_user_id, connection.account_id, stop)
        except AccessTokenRejected as exc:
            # Revoked early (a claims challenge passes its claims on): one refresh, whose outcome decides.
            await deps.tokens.access_token(str(job["connection_id"]), force_refresh=True,
                                           claims=exc.challenge.claims if exc.challenge is not None else None)
            resumed = await jobs.get(job_id)
            if resumed is None:  # deleted with its connection (ON DELETE CASCADE) meanwhile
                raise NotConnected(str(job["connection_id"]), "deleted") from exc
            await _run(deps, resumed, connection.graph_user_id, connection.account_id, stop)
    except Paused:
        await jobs.release(job_id)
        return
    except NotConnected as exc:
        await jobs.fail(job_id, f"the mailbox is {exc.status}; reconnect it and start again")
        JOBS.labels(kind, "failed").inc()
    except GraphError as exc:
        if exc.transient:
            # Leave it running: the lease lapses and a renewer resumes from the stored cursor.
            log.warning("sync job paused by a transient error", extra={"job_id": job_id})
            return
        await jobs.fail(job_id, f"Microsoft Graph refused the listing ({exc.classified.error_code})")
        JOBS.labels(kind, "failed").inc()
    else:
        JOBS.labels(kind, "done").inc()


async def _run(deps: PollDeps, job: asyncpg.Record, user: str, account_id: str,
               stop: asyncio.Event | None = None) -> None:
    job_id, since, until = str(job["job_id"]), job["since"], job["until"]
    jobs = deps.jobs
    token = await deps.tokens.access_token(str(job["connection_id"]))
    cursor = job["window_start"] or until
    link: str | None = job["next_link"]
    seen = job["messages_seen"]
    with_contacts = job["estimated_with_contacts"] or 0
    while cursor > since:
        start = max(since, cursor - WINDOW)
        url: str | None = link or window_url(user, start, cursor,
                                             ESTIMATE_SELECT if job["dry_run"] else "id,receivedDateTime")
        while url:
            if stop is not None and stop.is_set():
                raise Paused
            page = await deps.graph.get_page(token, user, url, page_size=100)
            ids = [str(m["id"]) for m in page.get("value", []) if "id" in m]
            if not job["dry_run"]:
                if job["kind"] == "backfill":
                    ids = await deps.polls.undecided(str(job["connection_id"]), ids)
                await publish_found(deps.publisher, connection_id=str(job["connection_id"]), account_id=account_id,
                                    message_ids=ids, source=job["kind"], job_id=job_id)
            else:  # the estimate: how many of them have a known contact among their participants
                with_contacts += await with_known_contacts(jobs, account_id, page.get("value", []))
            seen += len(page.get("value", []))
            url = page.get("@odata.nextLink")
            await jobs.record_progress(job_id, window_start=cursor, next_link=url, seen=seen,
                                       estimate=estimate_total(seen, until - cursor, until - since),
                                       with_contacts=with_contacts, lease=LEASE)
            token = await deps.tokens.access_token(str(job["connection_id"]))  # long jobs outlive a token
        cursor, link = start, None
        await jobs.record_progress(job_id, window_start=cursor, next_link=None, seen=seen,
                                   estimate=estimate_total(seen, until - cursor, until - since),
                                   with_contacts=with_contacts, lease=LEASE)
    await jobs.complete(job_id)


def message_addresses(message: dict[str, Any]) -> set[str]:
    """A Graph message's participants' addresses, normalised as the directory stores contacts' ones."""
    found: set[str] = set()
    for key in ("from", "sender", "toRecipients", "ccRecipients", "bccRecipients", "replyTo"):
        value = message.get(key)
        for recipient in value if isinstance(value, list) else [value]:
            email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
            address = normalize_address(str(email.get("address") or "")) if isinstance(email, dict) else None
            if address:
                found.add(address)
    return found


async def with_known_contacts(jobs: SyncJobs, account_id: str, messages: list[dict[str, Any]]) -> int:
    """How many of a listing page's messages name a known contact's address (one query per page). An estimate:
    the matcher's other rules (blocklists, folders, domains) decide the real import."""
    per_message = [message_addresses(m) for m in messages]
    wanted = sorted({a for addresses in per_message for a in addresses})
    if not wanted:
        return 0
    known = await jobs.known_contacts(account_id, wanted)
    return sum(1 for addresses in per_message if addresses & known)
