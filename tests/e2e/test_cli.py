"""The operator CLIs the README documents, run as processes against the running stack:
`mailsync status`, `mailsync diagnose` (by Internet message id and from a headers file) and
`mailsync backsync` (dry run and real). `mailsync rotate-keys` rewrites every stored token, so it
runs against a private stack (tests/e2e/test_private_stack_ops.py)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.kafka_caught_up import CaughtUpTail
from tests.support.procs import MAILSYNC, ROOT
from tests.support.stack import Mailbox, Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def mailsync(stack: Stack, *args: str, timeout: float = 90.0) -> tuple[int, str, str]:
    """`mailsync ARGS` with the stack's environment; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(*MAILSYNC, *args, env=stack.env, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def contact_and_mailbox(stack: Stack, address: str) -> tuple[str, str, Mailbox]:
    account = stack.new_account()
    contact = await stack.add_contact(account, address)
    await stack.wait_contact(contact)
    return account, contact, await stack.new_mailbox(account)


async def test_status_prints_every_connection_with_its_health(stack: Stack, db):
    account = stack.new_account()
    live, gone = await stack.new_mailbox(account), await stack.new_mailbox(account)
    status, _ = await stack.api("POST", f"/api/v1/connections/{gone.connection_id}/disconnect")
    assert status == 200

    code, out, err = await mailsync(stack, "status")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["connection_id", "user_id", "mailbox_address", "status", "error_code",
                                "last_synced_at", "subscription_expires"]
    total = await db.fetchval("SELECT count(*) FROM mailbox_connections")
    assert lines[-1] == f"{total} connection(s)" and len(lines) == total + 2
    row = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert row[live.connection_id][1:4] == [live.user_id, live.address, "connected"]
    expires = await db.fetchval("SELECT min(expires_at) FROM subscriptions WHERE connection_id = $1::uuid",
                                live.connection_id)
    assert row[live.connection_id][-1] == expires.strftime("%H:%M")  # date and time: the last two columns
    assert row[live.connection_id][-2] == expires.strftime("%Y-%m-%d")
    assert row[gone.connection_id][1] == gone.user_id and "disconnected" in row[gone.connection_id]
    assert row[gone.connection_id][-1] == "none"  # no subscription left


async def test_diagnose_by_internet_message_id(stack: Stack, db, engagements_tail):
    _account, contact, mailbox = await contact_and_mailbox(stack, "cli.diag@client.example")
    matched = await stack.deliver(mailbox, **{"from": "cli.diag@client.example"})
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=matched)
    junk = await stack.deliver(mailbox, folder="junkemail", **{"from": "cli.diag@client.example"})
    await stack.wait_row("SELECT 1 FROM match_decisions WHERE user_id = $1 AND message_key = $2", mailbox.user_id,
                         junk, what="the junk mail's decision")

    code, out, err = await mailsync(stack, "diagnose", "--user", mailbox.user_id, "--internet-message-id", matched,
                                    "--json")
    assert code == 0, err
    assert out.splitlines()[0].startswith("decision: matched")
    assert re.search(rf"- \[contact_address\] cli\.diag@client\.example is an address of contact {contact}\b", out)
    assert f"engagement: {event['engagement_id']}" in out
    printed = json.loads(out[out.index("\n{") + 1:])
    status, api = await stack.api("GET", f"/api/v1/diagnose?user_id={mailbox.user_id}&internet_message_id="
                                  + matched.replace("<", "%3C").replace(">", "%3E").replace("@", "%40"))
    assert status == 200 and printed == api  # the CLI says what the API says

    code, out, err = await mailsync(stack, "diagnose", "--user", mailbox.user_id, "--internet-message-id", junk)
    assert code == 0, err
    assert out.splitlines()[0] == "decision: excluded  (folder junkemail)"
    assert "[excluded_folder]" in out and "engagement:" not in out

    code, out, err = await mailsync(stack, "diagnose", "--user", "no-such-user", "--internet-message-id", matched)
    assert code == 2 and err.startswith("mailsync diagnose: ") and "Traceback" not in err


async def test_diagnose_from_a_headers_file(stack: Stack, tmp_path: Path):
    _account, contact, mailbox = await contact_and_mailbox(stack, "cli.headers@client.example")
    headers = tmp_path / "headers.txt"
    headers.write_text("Received: from mx.client.example by mx.us.example; Thu, 26 Nov 2026 10:00:01 +0000\n"
                       "Message-ID: <cli-never-delivered@client.example>\n"
                       "From: Boss (the (nested) comment) <cli.headers@client.example>\n"
                       f"To: {mailbox.address}\nDate: Thu, 26 Nov 2026 10:00:00 +0000\nSubject: lost?\n")
    code, out, err = await mailsync(stack, "diagnose", "--user", mailbox.user_id, "--headers", str(headers))
    assert code == 0, err
    assert out.splitlines()[0] == "decision: not_seen"
    assert "- [not_seen]" in out and "- [connection_status]" in out
    would = next(line for line in out.splitlines() if "[would_be]" in line)
    assert "matched" in would and contact in would

    bad = tmp_path / "no-id.txt"
    bad.write_text("From: someone@client.example\n")
    code, out, err = await mailsync(stack, "diagnose", "--user", mailbox.user_id, "--headers", str(bad))
    assert code == 2 and "Message-ID" in err and "Traceback" not in err

    hostile = tmp_path / "nested.txt"  # 120,000 nested comments: refused with a line, never a RecursionError
    hostile.write_text("Message-ID: <deep@client.example>\nFrom: " + "(" * 120_000 + "x@client.example\n")
    code, out, err = await mailsync(stack, "diagnose", "--user", mailbox.user_id, "--headers", str(hostile))
    assert code == 2 and err.startswith("mailsync diagnose: ") and "Traceback" not in err, err[-400:]

    code, out, err = await mailsync(stack, "diagnose", "--user", mailbox.user_id, "--headers", str(tmp_path / "gone"))
    assert code == 2 and "Traceback" not in err


@pytest_asyncio.fixture(loop_scope="session")
async def notifications(stack: Stack) -> AsyncIterator[CaughtUpTail]:
    tail = await CaughtUpTail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "mailsync.notifications.v1").start()
    yield tail
    await tail.stop()


async def test_backsync_dry_run_then_real(stack: Stack, db, engagements_tail, notifications: CaughtUpTail):
    _account, contact, mailbox = await contact_and_mailbox(stack, "cli.history@client.example")
    await stack.sandbox("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})  # only the back-sync sees them
    try:
        old = [await stack.deliver(mailbox, received_at=ago(days=d), **{"from": "cli.history@client.example"})
               for d in (40, 35, 31)]
        outside = await stack.deliver(mailbox, received_at=ago(days=50), **{"from": "cli.history@client.example"})
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
    window = ("--connection", mailbox.connection_id, "--since", ago(days=45), "--until", ago(days=30))

    code, out, err = await mailsync(stack, "backsync", *window, "--dry-run")
    assert code == 0, (out, err)
    lines = out.splitlines()
    assert re.fullmatch(r"back-sync [0-9a-f-]{36} queued \(dry run, .+\)", lines[0]), lines[0]
    assert lines[-1] == "done: 3 messages seen of ~3, 0 engagements created"
    job_id = lines[0].split()[1]
    assert await db.fetchval("SELECT dry_run FROM sync_jobs WHERE job_id = $1::uuid", job_id) is True

    code, out, err = await mailsync(stack, "backsync", *window)
    assert code == 0, (out, err)
    lines = out.splitlines()
    assert "dry run" not in lines[0] and lines[-1].startswith("done: 3 messages seen of ~3")
    for imid in old:
        event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=40)
        assert event["source"] == "backsync" and event["contact_ids"] == [contact]
    # The dry run sent nothing to the matcher; the real run sent the three messages (read to the topic's end).
    real_job = lines[0].split()[1]
    await notifications.caught_up()
    assert notifications.matching(job_id=job_id) == []
    assert len(notifications.matching(job_id=real_job, connection_id=mailbox.connection_id)) == 3
    dry_job = await db.fetchrow("SELECT engagements_created FROM sync_jobs WHERE job_id = $1::uuid", job_id)
    assert dry_job["engagements_created"] == 0
    await wait_until(lambda: db.fetchval("SELECT engagements_created = 3 FROM sync_jobs WHERE job_id = $1::uuid",
                                         real_job), what="three engagements counted on the real back-sync")
    assert await db.fetchval("SELECT count(*) FROM match_decisions WHERE user_id = $1 AND message_key = $2",
                             mailbox.user_id, outside) == 0  # outside the range

    for bad in (("--since", ago(days=1), "--until", ago(days=2)), ("--since", "yesterday", "--until", ago(days=1))):
        code, out, err = await mailsync(stack, "backsync", "--connection", mailbox.connection_id, *bad)
        assert code == 2 and "--since" in err
    code, out, err = await mailsync(stack, "backsync", "--connection", "00000000-0000-4000-8000-000000000000",
                                    "--since", ago(days=2), "--until", ago(days=1))
    assert code == 2 and "no connection" in out
