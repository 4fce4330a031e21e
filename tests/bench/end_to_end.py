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
            if p99 < 2.0:
                sustainable = rate
    finally:
        await tail.stop()
    figures["highest_sustainable_rate_per_s"] = float(sustainable)
    return figures
