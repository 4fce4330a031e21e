"""Matcher cost: CPU milliseconds per message (fetch, match, persist, publish) and messages per
second, against the same inserts done with asyncpg alone."""

from __future__ import annotations

import time
import uuid

from services.core import engagements
from services.core.capture import Capture
from services.core.domain import Decision, Direction, MailMessage, MatchResult, Participant, Reason, Role
from tests.bench.harness import BenchStack, cpu_seconds
from tests.support.wait import wait_until

MESSAGES = 400


async def run(bench: BenchStack) -> dict[str, float | str]:
    stack = bench.stack
    account = stack.new_account()
    contact = await stack.add_contact(account, "buyer@bench-client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    await stack.sandbox("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})
    try:
        ids = [(await stack.sandbox("POST", f"/sandbox/mailboxes/{mailbox.graph_id}/messages", {
            "folder": "inbox", "from": "buyer@bench-client.example", "to": [mailbox.address], "subject": f"m{i}",
            "body": "x", "internet_message_id": f"<bench-{uuid.uuid4()}@bench.example>"}))["id"]
            for i in range(MESSAGES)]
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
    from tests.bench.notify import publish_changes

    pid = bench.pid("matcher")
    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    await publish_changes(bench, mailbox.connection_id, account, ids)

    async def all_decided() -> bool:
        done = await bench.pool.fetchval("SELECT count(*) FROM match_decisions WHERE connection_id = $1::uuid",
                                         mailbox.connection_id)
        return bool(done >= MESSAGES)

    await wait_until(all_decided, timeout=300, interval=0.2, what="every bench message decided")
    wall, cpu = time.perf_counter() - wall0, cpu_seconds(pid) - cpu0
    base_cpu = await _baseline(bench, account, mailbox.user_id, mailbox.connection_id)
    per_message = cpu * 1000 / MESSAGES
    return {"messages": float(MESSAGES), "messages_per_s": MESSAGES / wall, "cpu_ms_per_message": per_message,
            "baseline_asyncpg_inserts_cpu_ms": base_cpu, "ratio_vs_baseline": per_message / base_cpu}


async def _baseline(bench: BenchStack, account: str, user_id: str, connection_id: str) -> float:
    """The same rows (engagement, mailbox, contact link, decision) written with asyncpg alone, in-process."""
    result = MatchResult(Decision.MATCHED, (Reason("contact_address", "bench"),), Direction.INBOUND,
                         (Participant("buyer@bench-client.example", "", Role.FROM),), ("bench-contact",), ())
    started = time.process_time()
    for i in range(MESSAGES):
        message = MailMessage(f"base-{i}", f"<base-{uuid.uuid4()}@bench.example>", "conv", f"s{i}", "inbox", False,
                              None, None, None, None)
        async with bench.pool.acquire() as conn, conn.transaction():
            await engagements.store_engagement(conn, account_id=account, user_id=user_id,
                                               connection_id=connection_id, message=message, result=result,
                                               source="bench", capture=Capture.SUBJECT)
    return (time.process_time() - started) * 1000 / MESSAGES
