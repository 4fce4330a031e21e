"""Matcher cost: CPU milliseconds per message (fetch, match, persist, publish) and messages per
second, against the same inserts done with asyncpg alone."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from services.core.application import engagements
from services.core.domain.model import Decision, Direction, MatchResult, Participant, Reason, Role
from tests.bench.harness import BenchStack, cpu_seconds
from tests.support.stack import quiet
from tests.support.wait import wait_until

MESSAGES = 400


async def run(bench: BenchStack) -> dict[str, float | str]:
    stack = bench.stack
    account = stack.new_account()
    contact = await stack.add_contact(account, "buyer@bench-client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    # The mailbox's first poll and back-fill are over before its mail exists: only the notifications below
    # reach the matcher while it is measured (a poll finding the same mail would double its work).
    await quiet(stack, bench.pool, mailbox)
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
    """The same rows (engagement, mailbox, contact link, decision) written with asyncpg alone, in-process, one
    message per transaction. The statements are fixed here, not taken from services.core.application.engagements, so the
    baseline stays the same yardstick whatever the matcher's own write path becomes."""
    result = MatchResult(Decision.MATCHED, (Reason("contact_address", "bench"),), Direction.INBOUND,
                         (Participant("buyer@bench-client.example", "", Role.FROM),), ("bench-contact",), ())
    participants = engagements.participants_json(result)
    reasons = [{"code": r.code, "detail": r.detail} for r in result.reasons]
    started = time.process_time()
    for i in range(MESSAGES):
        imid = f"<base-{uuid.uuid4()}@bench.example>"
        engagement_id = engagements.engagement_id_for(account, imid)
        when = datetime.now(UTC)
        async with bench.pool.acquire() as conn, conn.transaction():
            await conn.fetchval(
                """INSERT INTO engagements (engagement_id, account_id, internet_message_id, conversation_id, subject,
                                            direction, occurred_at, participants, source, preview, capture)
                   VALUES ($1::uuid, $2, $3, 'conv', $4, 'inbound', $5, $6, 'bench', NULL, 'subject')
                   ON CONFLICT (account_id, internet_message_id) DO NOTHING RETURNING true""",
                engagement_id, account, imid, f"s{i}", when, participants)
            await conn.execute(
                """INSERT INTO engagement_mailboxes (engagement_id, user_id, connection_id, message_id, folder)
                   VALUES ($1::uuid, $2, $3::uuid, $4, 'inbox') ON CONFLICT (engagement_id, user_id) DO NOTHING""",
                engagement_id, user_id, connection_id, f"base-{i}")
            await conn.executemany(
                """INSERT INTO engagement_contacts (engagement_id, contact_id, account_id, occurred_at)
                   VALUES ($1::uuid, $2, $3, $4) ON CONFLICT DO NOTHING""",
                [(engagement_id, c, account, when) for c in result.contact_ids])
            await conn.execute(
                """INSERT INTO match_decisions (user_id, message_key, account_id, connection_id, message_id,
                          internet_message_id, decision, reasons, folder, direction, participants, occurred_at,
                          engagement_id, source, subject, conversation_id, participant_addresses,
                          participant_domains)
                   VALUES ($1, $2, $3, $4::uuid, $5, $2, 'matched', $6, 'inbox', 'inbound', $7, $8, $9::uuid,
                           'bench', $10, 'conv', $11, $12) ON CONFLICT (user_id, message_key) DO NOTHING""",
                user_id, imid, account, connection_id, f"base-{i}", reasons, participants, when, engagement_id,
                f"s{i}", ["buyer@bench-client.example"], ["bench-client.example"])
            await conn.execute(
                "UPDATE engagements e SET send_id = s.send_id FROM sends s WHERE e.engagement_id = $1::uuid"
                " AND e.send_id IS NULL AND s.account_id = e.account_id"
                " AND s.internet_message_id = e.internet_message_id", engagement_id)
            await conn.fetchval("SELECT published_at IS NULL FROM engagements WHERE engagement_id = $1::uuid",
                                engagement_id)
    return (time.process_time() - started) * 1000 / MESSAGES
