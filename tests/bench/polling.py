"""Delta poll: mailboxes per hour one renewer keeps current, and Graph requests per idle mailbox."""

from __future__ import annotations

import time

from tests.bench.harness import BenchStack, cpu_seconds
from tests.support.wait import wait_until

MAILBOXES = 20


async def run(bench: BenchStack) -> dict[str, float | str]:
    stack = bench.stack
    account = stack.new_account()
    boxes = [await stack.new_mailbox(account) for _ in range(MAILBOXES)]
    ids = [b.connection_id for b in boxes]
    # Let the first poll of each (which creates the delta links) happen, then time a steady-state pass.
    await wait_until(lambda: bench.pool.fetchval(
        "SELECT count(*) = $2 FROM mailbox_connections WHERE connection_id = ANY($1::uuid[])"
        " AND last_polled_at IS NOT NULL", ids, MAILBOXES), timeout=120, what="first polls")
    before = await stack.sandbox("GET", "/sandbox/stats")
    pid = bench.pid("renewer")
    cpu0, started = cpu_seconds(pid), time.perf_counter()
    await bench.pool.execute(
        "UPDATE mailbox_connections SET next_poll_at = now() WHERE connection_id = ANY($1::uuid[])", ids)
    await wait_until(lambda: bench.pool.fetchval(
        "SELECT count(*) = $2 FROM mailbox_connections WHERE connection_id = ANY($1::uuid[])"
        " AND last_polled_at > now() - ($3 || ' seconds')::interval", ids, MAILBOXES,
        str(time.perf_counter() - started + 1)), timeout=120, what="second polls")
    took, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu0
    after = await stack.sandbox("GET", "/sandbox/stats")
    requests = _requests(after, boxes) - _requests(before, boxes)
    return {"mailboxes": float(MAILBOXES), "seconds_per_pass": took,
            "mailboxes_per_hour_one_replica_wall": MAILBOXES / took * 3600,
            "renewer_cpu_ms_per_mailbox_poll": cpu * 1000 / MAILBOXES,
            "graph_requests_per_idle_mailbox_poll": requests / MAILBOXES}


def _requests(stats: dict, boxes: list) -> float:
    mailboxes = stats.get("mailboxes", {})
    total = 0.0
    for box in boxes:
        entry = mailboxes.get(box.graph_id) or mailboxes.get(box.address) or {}
        total += float(entry.get("requests", entry.get("requests_served", 0)))
    return total
