"""Idle connected mailboxes over simulated hours (the sandbox clock sped up): Graph sends
reauthorizationRequired by itself as each subscription's token nears expiry; what does answering cost?
Baseline in the same run: the Graph requests of the hourly delta poll of the same mailboxes."""

from __future__ import annotations

from datetime import datetime

from services.core.adapters.graph.times import parse_graph_time
from tests.bench.harness import BenchStack
from tests.support.wait import wait_until

MAILBOXES = 5
SPEED = 180.0  # a sandbox hour in 20 real seconds
HOURS = 4


async def run(bench: BenchStack) -> dict[str, float | str]:
    stack = bench.stack
    account = stack.new_account()
    boxes = [await stack.new_mailbox(account) for _ in range(MAILBOXES)]
    ids = [b.connection_id for b in boxes]
    await wait_until(lambda: bench.pool.fetchval(
        "SELECT count(*) = $2 FROM mailbox_connections WHERE connection_id = ANY($1::uuid[])"
        " AND last_polled_at IS NOT NULL AND poll_lease_until IS NULL", ids, MAILBOXES), timeout=120,
        what="first polls")
    # One hourly poll of each, as the baseline: what the safety net costs per mailbox and hour.
    before_poll = await _totals(bench, boxes)
    await bench.pool.execute(
        "UPDATE mailbox_connections SET next_poll_at = now() WHERE connection_id = ANY($1::uuid[])", ids)
    await wait_until(lambda: bench.pool.fetchval(
        "SELECT count(*) = $2 FROM mailbox_connections WHERE connection_id = ANY($1::uuid[])"
        " AND next_poll_at > now() AND poll_lease_until IS NULL", ids, MAILBOXES), timeout=120, what="the polls")
    poll_requests = (await _totals(bench, boxes))["requests"] - before_poll["requests"]
    # Then hours with no mail and no poll: only Graph's own reminders and their answers.
    await bench.pool.execute("UPDATE mailbox_connections SET next_poll_at = now() + interval '1 day'"
                             " WHERE connection_id = ANY($1::uuid[])", ids)
    base = await _totals(bench, boxes)
    start = await _now(bench)
    await stack.sandbox("POST", "/sandbox/clock", {"speed": SPEED})
    try:
        async def hours_passed() -> bool:
            return (await _now(bench) - start).total_seconds() >= HOURS * 3600

        await wait_until(hours_passed, timeout=HOURS * 3600 / SPEED + 60, interval=0.5, what="simulated hours")
    finally:
        await stack.sandbox("POST", "/sandbox/clock", {"speed": 1})
    hours = (await _now(bench) - start).total_seconds() / 3600
    after = await _totals(bench, boxes)
    per_box_hour = (after["requests"] - base["requests"]) / MAILBOXES / hours
    return {
        "simulated_hours": hours,
        "reminders_per_mailbox_hour": (after["spontaneous"] - base["spontaneous"]) / MAILBOXES / hours,
        "graph_requests_per_mailbox_hour_beyond_poll": per_box_hour,
        "catch_up_delta_requests": after["delta"] - base["delta"],
        "hourly_poll_requests_per_mailbox": poll_requests / MAILBOXES,
        "reminder_cost_vs_hourly_poll": per_box_hour / (poll_requests / MAILBOXES) if poll_requests else 0.0,
    }


async def _now(bench: BenchStack) -> datetime:
    return parse_graph_time(str((await bench.stack.sandbox("GET", "/sandbox/clock"))["now"]))


async def _totals(bench: BenchStack, boxes: list) -> dict[str, float]:
    mailboxes = (await bench.stack.sandbox("GET", "/sandbox/stats")).get("mailboxes", {})
    totals = {"requests": 0.0, "spontaneous": 0.0, "delta": 0.0}
    for box in boxes:
        entry = mailboxes.get(box.graph_id, {})
        totals["requests"] += float(entry.get("requests", 0))
        totals["spontaneous"] += float(entry.get("lifecycle", {}).get("spontaneous", 0))
        totals["delta"] += float(entry.get("delta_requests", 0))
    return totals
