"""The send worker (a renewer task): claims queued sends with a lease, calls Graph with no transaction open,
records each step in its own short statement; an outcome commits with its send.completed / send.failed event
in the outbox (one transaction), which is published on mailsync.sends.v1 after the commit
(services/core/application/outbox.py; the outbox relay publishes what a crash left behind).

The decisions are services/core/domain/sends.py's; this module only carries them out. A send is marked in doubt
(committed) before `sendMail` is called, and stays so until an answer proves what happened, so a crash at
any point leaves either "never called" or "in doubt → look it up before sending again" (docs/design.md#sends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
from prometheus_client import Counter

from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.errors import GraphError
from services.core.adapters.kafka import Publisher
from services.core.adapters.store.outbox import Outbox
from services.core.adapters.store.sends import Sends
from services.core.application import outbox
from services.core.application.connections import NotConnected, TokenService, get_connection
from services.core.domain import events
from services.core.domain.event_types import SendCompleted, SendFailed
from services.core.domain.sends import (
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


@dataclass
class SendDeps:
    pool: asyncpg.Pool
    graph: GraphClient
    tokens: TokenService
    publisher: Publisher


async def claim(pool: asyncpg.Pool) -> asyncpg.Record | None:
    """One due send, leased to this worker (a short statement: committed before any Graph call)."""
    return await Sends(pool).claim_due(LEASE)


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
    if not await Sends(deps.pool).start_attempt(send_id, LEASE):
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
        await Sends(deps.pool).retry_later(send_id, wait, result.reason)


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
    day = await Sends(pool).sending_last_day(connection_id, leaving_out=this_send)
    return RecentSending(last_minute=tuple(t for t, _ in day), last_day=tuple(day))


async def _wait(pool: asyncpg.Pool, send_id: str, decision: Decision) -> None:
    await Sends(pool).wait_until(send_id, decision.until, decision.reason)


async def _sent(deps: SendDeps, send_id: str) -> None:
    if await _conclude(deps, lambda sends: sends.mark_sent(send_id)):
        SENDS.labels("sent").inc()


async def _fail(deps: SendDeps, send_id: str, reason: str, *, in_doubt: bool | None = None) -> None:
    if await _conclude(deps, lambda sends: sends.mark_failed(send_id, reason, in_doubt=in_doubt)):
        SENDS.labels("failed").inc()
        log.info("send failed", extra={"send_id": send_id, "reason": reason})


async def _conclude(deps: SendDeps, outcome: Callable[[Sends], Awaitable[asyncpg.Record | None]]) -> bool:
    """The outcome and its event commit together; the event is published after the commit (a crash in between
    leaves it to the outbox relay). False when the send was no longer queued (nothing recorded)."""
    async with deps.pool.acquire() as conn, conn.transaction():
        row = await outcome(Sends(conn))
        ids = [] if row is None else await Outbox(conn).add(
            [outbox.entry(events.SENDS, row["user_id"], outcome_event(row))])
    await outbox.publish_now(deps.pool, deps.publisher, ids)
    return row is not None


def outcome_event(row: asyncpg.Record | dict[str, Any]) -> SendCompleted | SendFailed:
    """send.completed / send.failed; the event id is stable per send, so a republication dedupes."""
    send_id = str(row["send_id"])
    if row["status"] == "sent":
        return SendCompleted(
            send_id=send_id, user_id=row["user_id"], account_id=row["account_id"],
            internet_message_id=row["internet_message_id"], event_id=events.stable_event_id("send.completed", send_id))
    return SendFailed(
        send_id=send_id, user_id=row["user_id"], account_id=row["account_id"], error=row["error"] or "not sent",
        event_id=events.stable_event_id("send.failed", send_id))
