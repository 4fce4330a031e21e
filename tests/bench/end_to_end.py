"""End to end: sandbox delivery → webhook → Kafka → matcher → engagement.created, at a steady rate
and at increasing rates until the p99 passes 2 s (the highest sustainable rate)."""

from __future__ import annotations

import asyncio
import time

from tests.bench.harness import BenchStack, percentile
from tests.support.kafka_tail import Tail

RATES = (5, 20, 50, 100, 200)
SECONDS = 6


async def _at_rate(bench: BenchStack, tail: Tail, mailbox, rate: int) -> list[float]:
    """Deliver at `rate` per second while a reader notes when each engagement.created arrives."""
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    sending = True

    async def read() -> None:
        deadline = None
        while deadline is None or (len(arrived) < len(sent) and time.perf_counter() < deadline):
            for _, event in await tail.poll():
                imid = event.get("internet_message_id")
                if imid and imid not in arrived and event.get("type") == "engagement.created":
                    arrived[imid] = time.perf_counter()
            tail.records.clear()
            if not sending and deadline is None:
                deadline = time.perf_counter() + 60

    reader = asyncio.create_task(read())
    interval = 1 / rate
    start = time.perf_counter()
    for i in range(rate * SECONDS):
        await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
        before = time.perf_counter()
        imid = await bench.stack.deliver(mailbox, **{"from": "e2e@bench-client.example"})
        sent[imid] = before
    sending = False
    await reader
    return [arrived[i] - t if i in arrived else float("inf") for i, t in sent.items()]


async def run(bench: BenchStack) -> dict[str, float | str]:
    stack = bench.stack
    account = stack.new_account()
    contact = await stack.add_contact(account, "e2e@bench-client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    tail = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "mailsync.engagements.v1").start()
    figures: dict[str, float | str] = {}
    sustainable = 0
    try:
        for rate in RATES:
            latencies = await _at_rate(bench, tail, mailbox, rate)
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            figures[f"rate_{rate}_per_s_p50_ms"] = p50 * 1000
            figures[f"rate_{rate}_per_s_p99_ms"] = p99 * 1000
            late = sum(1 for v in latencies if v == float("inf"))
            figures[f"rate_{rate}_per_s_not_in_60s"] = f"{late} of {len(latencies)}"
            if p99 < 2.0:
                sustainable = rate
    finally:
        await tail.stop()
    figures["highest_sustainable_rate_per_s"] = float(sustainable)
    # Past the sustainable rate a backlog builds; nothing may be lost: wait for every engagement.
    delivered = sum(rate * SECONDS for rate in RATES)
    started = time.perf_counter()
    count = 0
    while time.perf_counter() - started < 180:
        count = await bench.pool.fetchval("SELECT count(*) FROM engagements WHERE account_id = $1", account)
        if count >= delivered:
            break
        await asyncio.sleep(0.5)
    figures["engagements_eventually"] = f"{count} of {delivered} after {time.perf_counter() - started:.0f}s more"
    notifications = (await stack.sandbox("GET", "/sandbox/stats"))["notifications"]
    figures["sandbox_notifications_dropped_or_failed"] = float(notifications["dropped"] + notifications["failed"])
    figures["sandbox_notifications_retried"] = float(notifications["retried"])
    figures["sandbox_notifications_still_queued"] = float(notifications["pending"] + notifications["in_flight"])
    return figures
