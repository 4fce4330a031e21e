"""End to end: sandbox delivery → webhook → Kafka → matcher → engagement.created, at a steady rate
and at increasing rates until the p99 passes 2 s (the highest sustainable rate)."""

from __future__ import annotations

import asyncio
import time

from tests.bench.harness import BenchStack, percentile
from tests.support.kafka_tail import Tail

RATES = (5, 20, 50)
SECONDS = 6


async def _at_rate(bench: BenchStack, tail: Tail, mailbox, rate: int) -> list[float]:
    sent: dict[str, float] = {}
    interval = 1 / rate
    start = time.perf_counter()
    for i in range(rate * SECONDS):
        await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
        imid = await bench.stack.deliver(mailbox, **{"from": "e2e@bench-client.example"})
        sent[imid] = time.perf_counter()
    latencies: dict[str, float] = {}
    deadline = time.perf_counter() + 60
    while len(latencies) < len(sent) and time.perf_counter() < deadline:
        for _, event in await tail.poll():
            imid = event.get("internet_message_id")
            if imid in sent and imid not in latencies and event.get("type") == "engagement.created":
                latencies[imid] = time.perf_counter() - sent[imid]
    lost = len(sent) - len(latencies)
    return list(latencies.values()) + [float("inf")] * lost


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
