"""The send worker (a renewer task): claims queued sends with a lease, calls Graph with no transaction open,
records each outcome in its own short statement, then announces it on mailsync.sends.v1.

The decisions are services/core/sends.py's; this module only carries them out. A send is marked in doubt
(committed) before `sendMail` is called, and stays so until an answer proves what happened, so a crash at
any point leaves either "never called" or "in doubt → look it up before sending again" (docs/design.md#sends).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
from prometheus_client import Counter

from services.core import events
from services.core.connections import NotConnected, TokenService, get_connection
from services.core.event_types import SendCompleted, SendFailed, to_value
from services.core.graph.client import GraphClient
from services.core.graph.errors import GraphError
from services.core.kafka import Publisher
from services.core.sends import (
    LEASE,
    UNCERTAIN_RETRY,
    CallResult,
    Claimed,
    Decision,
    Outcome,
    RecentSending,
    Step,
    after_lookup,
    before_call,
    classify_send_answer,
    graph_message,
    sending_limit,
)

log = logging.getLogger(__name__)

SENDS = Counter("mailsync_sends_total", "Sends by outcome (sent, failed, deferred, in_doubt)", ["outcome"])
TICK_S = 1.0  # how often the worker looks for due sends: one indexed query (sends_due)
LOOKUP_RETRY = timedelta(seconds=30)  # a lookup Graph could not answer is tried again this soon
RELAY_AFTER = timedelta(minutes=1)  # an outcome unannounced for this long was left behind by a crash


@dataclass
class SendDeps:
    pool: asyncpg.Pool
    graph: GraphClient
    tokens: TokenService
    publisher: Publisher


async def claim(pool: asyncpg.Pool) -> asyncpg.Record | None:
    """One due send, leased to this worker (a short statement: committed before any Graph call)."""
    return await pool.fetchrow(
        """UPDATE sends SET lease_until = now() + $1::interval, updated_at = now()
            WHERE send_id = (SELECT send_id FROM sends
                              WHERE status = 'queued' AND next_attempt_at <= now()
                                AND (lease_until IS NULL OR lease_until < now())
                              ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING *, now() AS db_now""", LEASE)


async def run_due(deps: SendDeps, stop: asyncio.Event | None = None) -> int:
    """Every due send, one after another (sends of one mailbox keep their order); returns how many."""
    done = 0
    while stop is None or not stop.is_set():
        row = await claim(deps.pool)
        if row is None:
            break
        try:
            await process(deps, row)
        except Exception:
            # The lease lapses and the send is claimed again; if a call began, it is in doubt and looked up.
            log.exception("send pass failed", extra={"send_id": str(row["send_id"])})
        done += 1
    await publish_left_behind(deps.pool, deps.publisher, older_than=RELAY_AFTER)
    return done


async def process(deps: SendDeps, row: asyncpg.Record) -> None:
    send_id, now = str(row["send_id"]), row["db_now"]
    claimed = Claimed(in_doubt=row["in_doubt"], attempt_started_at=row["attempt_started_at"],
                      created_at=row["created_at"])
    connection = await get_connection(deps.pool, str(row["connection_id"]))
    if connection is None or connection.status != "connected" or connection.graph_user_id is None:
        status = connection.status if connection is not None else "deleted"
        await _fail(deps, send_id, f"the mailbox is {status}: reconnect it and send again"
                    + (" (an earlier attempt may have been sent; check Sent Items)" if claimed.in_doubt else ""))
        return
    user = connection.graph_user_id
    decision = before_call(claimed, now)
    if decision.step is Step.LOOK_UP:
        try:
            found = await _look_up(deps, str(row["connection_id"]), user, row["internet_message_id"])
        except (GraphError, NotConnected) as exc:
            log.warning("send lookup failed; trying again", extra={"send_id": send_id, "error": str(exc)})
            await _wait(deps.pool, send_id, Decision(Step.WAIT, until=now + LOOKUP_RETRY, reason=row["error"]))
            return
        decision = after_lookup(claimed, found, now)
    if decision.step is Step.MARK_SENT:
        await _sent(deps, send_id)
    elif decision.step is Step.FAIL:
        await _fail(deps, send_id, decision.reason or "not sent")
    elif decision.step is Step.WAIT:
        await _wait(deps.pool, send_id, decision)
    else:
        await _send(deps, row, user, now)


async def _send(deps: SendDeps, row: asyncpg.Record, user: str, now: datetime) -> None:
    send_id = str(row["send_id"])
    recent = await recent_sending(deps.pool, str(row["connection_id"]), send_id)
    limited = sending_limit(recent, row["recipient_count"], now)
    if limited is not None:
        SENDS.labels("deferred").inc()
        await _wait(deps.pool, send_id, limited)
        return
    # In doubt from here on, committed before the call: a crash during the call is looked up, never re-sent blind.
    started = await deps.pool.fetchval(
        """UPDATE sends SET in_doubt = true, attempts = attempts + 1, attempt_started_at = now(),
                  lease_until = now() + $2::interval, updated_at = now()
            WHERE send_id = $1::uuid AND status = 'queued' RETURNING true""", send_id, LEASE)
    if not started:
        return
    body = {"message": graph_message(subject=row["subject"], body=row["body"] or "", body_type=row["body_type"],
                                     to=list(row["to_addresses"]), cc=list(row["cc_addresses"]),
                                     internet_message_id=row["internet_message_id"], send_id=send_id),
            "saveToSentItems": True}

    async def call(token: str) -> dict[str, Any]:
        # One attempt: a POST retried on a lost answer could send twice; the lookup decides instead.
        return await deps.graph.request("POST", f"/users/{quote(user, safe='@')}/sendMail", token, mailbox=user,
                                        json=body, attempts=1)

    try:
        await deps.tokens.call(str(row["connection_id"]), call)
        result = CallResult(Outcome.SENT)
    except NotConnected as exc:  # refused before Graph took anything (no token, or a 401 that stayed)
        await _fail(deps, send_id, f"the mailbox is {exc.status}: reconnect it and send again", in_doubt=False)
        return
    except GraphError as exc:
        result = classify_send_answer(exc.status, exc.classified.error_code, exc.retry_after)
    await _record(deps, send_id, result)


async def _record(deps: SendDeps, send_id: str, result: CallResult) -> None:
    if result.outcome is Outcome.SENT:
        await _sent(deps, send_id)
    elif result.outcome is Outcome.FAILED:
        await _fail(deps, send_id, result.reason or "refused", in_doubt=False)
    else:
        # Throttled or uncertain: stays in doubt (a 429 on sendMail has been seen with the message sent
        # anyway), so the next attempt looks it up first and re-sends only after SETTLE.
        SENDS.labels("in_doubt").inc()
        wait = timedelta(seconds=result.retry_after_s) if result.retry_after_s is not None else UNCERTAIN_RETRY
        await deps.pool.execute(
            """UPDATE sends SET next_attempt_at = now() + $2::interval, lease_until = NULL, error = $3,
                      updated_at = now() WHERE send_id = $1::uuid AND status = 'queued'""",
            send_id, wait, result.reason)


async def _look_up(deps: SendDeps, connection_id: str, user: str, internet_message_id: str) -> bool:
    """Whether the mailbox holds the sent message (not a draft) with this internetMessageId."""
    escaped = internet_message_id.replace("'", "''")
    params = {"$filter": f"internetMessageId eq '{escaped}'", "$select": "id,isDraft", "$top": "10"}

    async def call(token: str) -> dict[str, Any]:
        return await deps.graph.request("GET", f"/users/{quote(user, safe='@')}/messages", token, mailbox=user,
                                        params=params)

    page = await deps.tokens.call(connection_id, call)
    return any(isinstance(m, dict) and m.get("isDraft") is False for m in page.get("value", []))


async def recent_sending(pool: asyncpg.Pool, connection_id: str, this_send: str) -> RecentSending:
    """The mailbox's sends of the last day (and those in doubt: they may have gone), this one left out."""
    rows = await pool.fetch(
        "SELECT sent_at, recipient_count FROM sends WHERE connection_id = $1::uuid"
        " AND sent_at > now() - interval '1 day' ORDER BY sent_at", connection_id)
    doubt = await pool.fetch(
        "SELECT attempt_started_at, recipient_count FROM sends WHERE connection_id = $1::uuid AND in_doubt"
        " AND status = 'queued' AND attempt_started_at > now() - interval '1 day' AND send_id <> $2::uuid",
        connection_id, this_send)
    day = sorted([(r["sent_at"], r["recipient_count"]) for r in rows]
                 + [(r["attempt_started_at"], r["recipient_count"]) for r in doubt])
    return RecentSending(last_minute=tuple(t for t, _ in day), last_day=tuple(day))


async def _wait(pool: asyncpg.Pool, send_id: str, decision: Decision) -> None:
    await pool.execute(
        """UPDATE sends SET next_attempt_at = $2, lease_until = NULL, error = $3, updated_at = now()
            WHERE send_id = $1::uuid AND status = 'queued'""", send_id, decision.until, decision.reason)


async def _sent(deps: SendDeps, send_id: str) -> None:
    row = await deps.pool.fetchrow(
        """UPDATE sends SET status = 'sent', in_doubt = false, error = NULL, body = NULL, lease_until = NULL,
                  sent_at = coalesce(attempt_started_at, now()), updated_at = now()
            WHERE send_id = $1::uuid AND status = 'queued' RETURNING *""", send_id)
    if row is not None:
        SENDS.labels("sent").inc()
        await publish_outcomes(deps.pool, deps.publisher, [row])


async def _fail(deps: SendDeps, send_id: str, reason: str, *, in_doubt: bool | None = None) -> None:
    row = await deps.pool.fetchrow(
        """UPDATE sends SET status = 'failed', error = $2, body = NULL, lease_until = NULL, updated_at = now(),
                  in_doubt = coalesce($3, in_doubt)
            WHERE send_id = $1::uuid AND status = 'queued' RETURNING *""", send_id, reason, in_doubt)
    if row is not None:
        SENDS.labels("failed").inc()
        log.info("send failed", extra={"send_id": send_id, "reason": reason})
        await publish_outcomes(deps.pool, deps.publisher, [row])


def outcome_event(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """send.completed / send.failed; the event id is stable per send, so a republication dedupes."""
    send_id = str(row["send_id"])
    if row["status"] == "sent":
        return to_value(SendCompleted(
            send_id=send_id, user_id=row["user_id"], account_id=row["account_id"],
            internet_message_id=row["internet_message_id"], event_id=events.stable_event_id("send.completed", send_id)))
    return to_value(SendFailed(
        send_id=send_id, user_id=row["user_id"], account_id=row["account_id"], error=row["error"] or "not sent",
        event_id=events.stable_event_id("send.failed", send_id)))


async def publish_outcomes(pool: asyncpg.Pool, publisher: Publisher, rows: list[asyncpg.Record]) -> None:
    """After the outcome is committed: publish, then mark. A crash in between republishes the same event."""
    await publisher.publish_many(events.SENDS, [(r["user_id"], outcome_event(r)) for r in rows])
    await pool.execute("UPDATE sends SET published_at = now() WHERE send_id = ANY($1::uuid[])",
                       [str(r["send_id"]) for r in rows])


async def publish_left_behind(pool: asyncpg.Pool, publisher: Publisher, *, older_than: timedelta) -> int:
    """The relay: outcomes committed but not announced (Kafka was down, or the worker died in between)."""
    rows = await pool.fetch(
        "SELECT * FROM sends WHERE status <> 'queued' AND published_at IS NULL AND updated_at < now() - $1::interval"
        " ORDER BY updated_at LIMIT 200", older_than)
    if rows:
        await publish_outcomes(pool, publisher, list(rows))
    return len(rows)
