"""Chaos on the infrastructure itself: the Kafka broker is killed (-9) and comes back, PostgreSQL
restarts, while the sandbox delivers a stream of mail. Afterwards every message from a contact is
exactly one engagement and one engagement.created, and nothing was lost (a private stack, so the
shared one stays up)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.kafka_tail import Tail
from tests.support.private_infra import PrivateInfra
from tests.support.stack import close_clients, open_clients, start_stack, stop_stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

WAVE = 10


async def test_broker_killed_and_postgres_restarted_under_a_stream_of_mail():
    infra = PrivateInfra().start()
    stack = None
    tail = None
    try:
        stack = await open_clients(await asyncio.to_thread(start_stack, infra.env, "chaos-"))
        account = stack.new_account()
        contact = await stack.add_contact(account, "stream@client.example")
        await stack.wait_contact(contact)
        mailbox = await stack.new_mailbox(account)
        tail = await Tail(infra.kafka.bootstrap, "mailsync.engagements.v1").start()

        async def wave(tag: str) -> list[str]:
            return list(await asyncio.gather(*(
                stack.deliver(mailbox, **{"from": "stream@client.example", "subject": f"{tag}-{i}"})
                for i in range(WAVE))))

        imids = await wave("before")
        infra.kafka.kill()  # kill -9 while notifications are in flight
        imids += await wave("broker-down")  # the webhook answers 503; the sandbox retries with back-off
        await asyncio.to_thread(infra.restart_kafka_after_kill)
        imids += await wave("broker-back")
        await asyncio.to_thread(infra.postgres.restart)
        imids += await wave("postgres-restarted")

        for imid in imids:
            await tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=150)
        assert stack.pool is not None
        counts = await wait_until(lambda: stack.pool.fetch(
            "SELECT internet_message_id, count(*) AS n FROM engagements WHERE account_id = $1"
            " GROUP BY internet_message_id", account), what="engagement rows")
        assert {r["internet_message_id"]: r["n"] for r in counts} == dict.fromkeys(imids, 1)
        await tail.poll()
        for imid in imids:
            ids = {e["event_id"] for e in tail.matching(type="engagement.created", internet_message_id=imid)}
            assert len(ids) == 1, (imid, ids)
        stats = await stack.sandbox("GET", "/sandbox/stats")
        # Graph saw failures while Kafka was down (so it retried), and in the end nothing was given up.
        assert stats["notifications"]["retried"] > 0 and stats["notifications"]["failed"] == 0
    finally:
        if tail is not None:
            await tail.stop()
        if stack is not None:
            await close_clients(stack)
            stop_stack(stack)
        infra.close()
