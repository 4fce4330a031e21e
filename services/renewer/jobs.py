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

from services.core.addresses import normalize_address
from services.core.connections import NotConnected, get_connection
from services.core.graph.errors import AccessTokenRejected, GraphError
from services.core.schedule import estimate_total, iso
from services.renewer.delta import PollDeps, _unknown
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
    """The next job to run: back-fills (a new or reconnected mailbox) before requested back-syncs, oldest
    first, and never a second one for a mailbox that has one running (Graph's per-mailbox budget)."""
    return await pool.fetchrow(
        """UPDATE sync_jobs SET status = 'running', lease_until = now() + $1::interval, updated_at = now()
            WHERE job_id = (SELECT j.job_id FROM sync_jobs j
                             WHERE j.status IN ('queued', 'running')
                               AND (j.lease_until IS NULL OR j.lease_until < now())
                               AND NOT EXISTS (SELECT 1 FROM sync_jobs r
                                                WHERE r.connection_id = j.connection_id AND r.job_id <> j.job_id
                                                  AND r.status = 'running' AND r.lease_until >= now())
                             ORDER BY j.kind = 'backsync', j.created_at LIMIT 1 FOR UPDATE OF j SKIP LOCKED)
        RETURNING *""", LEASE)


class Paused(Exception):
    """The renewer is stopping: the job's cursor is stored; its lease is released for another replica."""


async def run_job(deps: PollDeps, job: asyncpg.Record, stop: asyncio.Event | None = None) -> None:
    job_id, kind = str(job["job_id"]), job["kind"]
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
            await _run(deps, await deps.pool.fetchrow("SELECT * FROM sync_jobs WHERE job_id = $1", job["job_id"]),
                       connection.graph_user_id, connection.account_id, stop)
    except Paused:
        await deps.pool.execute("UPDATE sync_jobs SET lease_until = NULL WHERE job_id = $1::uuid", job_id)
        return
    except NotConnected as exc:
        await _finish(deps.pool, job_id, "failed", f"the mailbox is {exc.status}; reconnect it and start again")
        JOBS.labels(kind, "failed").inc()
    except GraphError as exc:
        if exc.transient:
            # Leave it running: the lease lapses and a renewer resumes from the stored cursor.
            log.warning("sync job paused by a transient error", extra={"job_id": job_id})
            return
        await _finish(deps.pool, job_id, "failed", f"Microsoft Graph refused the listing ({exc.classified.error_code})")
        JOBS.labels(kind, "failed").inc()
    else:
        JOBS.labels(kind, "done").inc()


async def _finish(pool: asyncpg.Pool, job_id: str, status: str, error: str | None) -> None:
    await pool.execute("UPDATE sync_jobs SET status = $2, error = $3, lease_until = NULL, updated_at = now()"
                       " WHERE job_id = $1::uuid", job_id, status, error)


async def _run(deps: PollDeps, job: asyncpg.Record, user: str, account_id: str,
               stop: asyncio.Event | None = None) -> None:
    job_id, since, until = str(job["job_id"]), job["since"], job["until"]
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
                    ids = await _unknown(deps.pool, str(job["connection_id"]), ids)
                await publish_found(deps.publisher, connection_id=str(job["connection_id"]), account_id=account_id,
                                    message_ids=ids, source=job["kind"], job_id=job_id)
            else:  # the estimate: how many of them have a known contact among their participants
                with_contacts += await with_known_contacts(deps.pool, account_id, page.get("value", []))
            seen += len(page.get("value", []))
            url = page.get("@odata.nextLink")
            await _progress(deps.pool, job_id, cursor, url, seen, estimate_total(seen, until - cursor, until - since),
                            with_contacts)
            token = await deps.tokens.access_token(str(job["connection_id"]))  # long jobs outlive a token
        cursor, link = start, None
        await _progress(deps.pool, job_id, cursor, None, seen, estimate_total(seen, until - cursor, until - since),
                        with_contacts)
    await deps.pool.execute(
        "UPDATE sync_jobs SET status = 'done', estimated_total = messages_seen, lease_until = NULL, updated_at = now()"
        " WHERE job_id = $1::uuid", job_id)


async def _progress(pool: asyncpg.Pool, job_id: str, window_start: Any, next_link: str | None, seen: int,
                    estimate: int, with_contacts: int = 0) -> None:
    await pool.execute(
        """UPDATE sync_jobs SET window_start = $2, next_link = $3, messages_seen = $4, estimated_total = $5,
                  lease_until = now() + $6::interval, updated_at = now(),
                  estimated_with_contacts = CASE WHEN dry_run THEN $7::integer END WHERE job_id = $1::uuid""",
        job_id, window_start, next_link, seen, estimate, LEASE, with_contacts)


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


async def with_known_contacts(pool: asyncpg.Pool, account_id: str, messages: list[dict[str, Any]]) -> int:
    """How many of a listing page's messages name a known contact's address (one query per page). An estimate:
    the matcher's other rules (blocklists, folders, domains) decide the real import."""
    per_message = [message_addresses(m) for m in messages]
    wanted = sorted({a for addresses in per_message for a in addresses})
    if not wanted:
        return 0
    known = {r["address"] for r in await pool.fetch(
        "SELECT DISTINCT address FROM contact_addresses WHERE account_id = $1 AND address = ANY($2::text[])",
        account_id, wanted)}
    return sum(1 for addresses in per_message if addresses & known)
