"""Sending from the application through the real stack: API → renewer's send worker → sandbox Graph → Sent
Items copy → matcher → outbound engagement with send_id; send.completed on Kafka. Idempotency, a lost answer,
a kill -9 of the worker mid-send, Exchange's per-minute limit, bad input and another account's token."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import pytest_asyncio

from tests.support.kafka_tail import Tail
from tests.support.procs import MAILSYNC, Proc, free_port
from tests.support.stack import Mailbox, Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


@pytest_asyncio.fixture(loop_scope="session")
async def sends_tail(stack: Stack) -> AsyncIterator[Tail]:
    tail = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "mailsync.sends.v1").start()
    yield tail
    await tail.stop()


def account_token(stack: Stack, account_id: str) -> str:
    return jwt.encode({"aud": "mailsync-api", "account_id": account_id, "exp": int(time.time()) + 600},
                      stack.env["MAILSYNC_SESSION_SECRET"], algorithm="HS256")


async def call(stack: Stack, method: str, path: str, body: Any = None, *, token: str | None = None
               ) -> tuple[int, Any]:
    assert stack.http is not None
    headers = {"Authorization": f"Bearer {token}"} if token else stack.api_headers
    async with stack.http.request(method, f"{stack.api_url}{path}", json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def send_body(to: list[str], key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"to": to, "cc": [], "subject": "Our proposal", "body": "Hello from the CRM", "body_type": "text",
            "idempotency_key": key or uuid.uuid4().hex, **extra}


async def graph_find(stack: Stack, mailbox: Mailbox, imid: str) -> list[dict[str, Any]]:
    """The mailbox's messages with this internetMessageId, as Graph lists them (any folder)."""
    issued = await stack.sandbox("POST", "/sandbox/tokens", {"user_id": mailbox.graph_id, "scopes": ["Mail.Read"]})
    assert stack.http is not None
    query = quote(f"internetMessageId eq '{imid}'")
    async with stack.http.get(f"{stack.sandbox_url}/v1.0/users/{mailbox.graph_id}/messages?$filter={query}"
                              "&$select=id,isDraft,parentFolderId,subject",
                              headers={"Authorization": f"Bearer {issued['access_token']}"}) as resp:
        assert resp.status == 200
        return list((await resp.json())["value"])


async def sent_items(stack: Stack, mailbox: Mailbox, imid: str) -> list[dict[str, Any]]:
    issued = await stack.sandbox("POST", "/sandbox/tokens", {"user_id": mailbox.graph_id, "scopes": ["Mail.Read"]})
    assert stack.http is not None
    async with stack.http.get(f"{stack.sandbox_url}/v1.0/users/{mailbox.graph_id}/mailFolders/sentitems",
                              headers={"Authorization": f"Bearer {issued['access_token']}"}) as resp:
        folder = (await resp.json())["id"]
    return [m for m in await graph_find(stack, mailbox, imid) if m["parentFolderId"] == folder]


async def wait_status(stack: Stack, send_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        code, view = await call(stack, "GET", f"/api/v1/sends/{send_id}")
        assert code == 200, view
        return view if view["status"] == status else None

    return await wait_until(reached, timeout=timeout, what=f"send {send_id} {status}")


async def sender(stack: Stack) -> tuple[str, Mailbox]:
    account = stack.new_account()
    return account, await stack.new_mailbox(account)


async def test_a_send_reaches_the_recipient_and_the_timeline(stack: Stack, db, engagements_tail, sends_tail):
    account, mailbox = await sender(stack)
    # The client's contact has a mailbox in the sandbox too (another organisation, not connected here).
    other = await stack.new_mailbox(stack.new_account(), connect=False)
    contact = await stack.add_contact(account, other.address)
    await stack.wait_contact(contact)
    started = time.monotonic()
    status, queued = await call(stack, "POST", f"/api/v1/users/{mailbox.user_id}/send", send_body([other.address]))
    assert status == 202 and queued["status"] == "queued", queued
    send_id = queued["send_id"]
    done = await sends_tail.wait_for(type="send.completed", send_id=send_id, timeout=30)
    completed_s = time.monotonic() - started
    assert done["user_id"] == mailbox.user_id and done["account_id"] == account
    imid = done["internet_message_id"]
    assert len(await sent_items(stack, mailbox, imid)) == 1
    assert len(await graph_find(stack, other, imid)) == 1  # in the recipient's Inbox
    created = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=30)
    assert created["send_id"] == send_id and created["direction"] == "outbound"
    assert created["contact_ids"] == [contact]
    print(f"\nsend: 202 → send.completed {completed_s:.2f} s, → engagement.created "
          f"{time.monotonic() - started:.2f} s")
    assert await db.fetchval("SELECT send_id::text FROM engagements WHERE engagement_id = $1::uuid",
                             created["engagement_id"]) == send_id
    view = await wait_status(stack, send_id, "sent")
    assert view["engagement_id"] == created["engagement_id"] and view["error"] is None
    status, timeline = await call(stack, "GET", f"/api/v1/contacts/{contact}/engagements")
    assert status == 200 and [e["engagement_id"] for e in timeline["engagements"]] == [created["engagement_id"]]
    assert timeline["engagements"][0]["send_id"] == send_id
    assert await db.fetchval("SELECT body FROM sends WHERE send_id = $1::uuid", send_id) is None  # not kept


async def test_the_same_idempotency_key_sends_once(stack: Stack, db, sends_tail):
    _, mailbox = await sender(stack)
    body = send_body(["jane@client.example"], key="invoice-2026-001")
    status, first = await call(stack, "POST", f"/api/v1/users/{mailbox.user_id}/send", body)
    assert status == 202
    status, again = await call(stack, "POST", f"/api/v1/users/{mailbox.user_id}/send", body)
    assert status == 202 and again["send_id"] == first["send_id"]
    done = await sends_tail.wait_for(type="send.completed", send_id=first["send_id"], timeout=30)
    status, late = await call(stack, "POST", f"/api/v1/users/{mailbox.user_id}/send",
                              {**body, "subject": "changed my mind"})
    assert status == 202 and late == {"send_id": first["send_id"], "status": "sent"}
    assert len(await sent_items(stack, mailbox, done["internet_message_id"])) == 1
    assert await db.fetchval("SELECT count(*) FROM sends WHERE user_id = $1", mailbox.user_id) == 1
    status, other = await call(stack, "POST", f"/api/v1/users/{mailbox.user_id}/send", send_body(["j@client.example"]))
    assert status == 202 and other["send_id"] != first["send_id"]  # another key is another send


async def test_a_lost_answer_is_looked_up_not_sent_again(stack: Stack, db, sends_tail):
    _, mailbox = await sender(stack)
    await stack.sandbox("POST", "/sandbox/send-faults", {"lose_responses": 1})
    try:
        status, queued = await call(stack, "POST", f"/api/v1/users/{mailbox.user_id}/send",
                                    send_body(["jane@client.example"]))
        assert status == 202
        done = await sends_tail.wait_for(type="send.completed", send_id=queued["send_id"], timeout=40)
    finally:
        await stack.sandbox("POST", "/sandbox/send-faults", {"reset": True})
    row = await db.fetchrow("SELECT attempts, in_doubt FROM sends WHERE send_id = $1::uuid", queued["send_id"])
    assert row["attempts"] == 1 and not row["in_doubt"]  # one call to sendMail: the 504 was resolved by a lookup
    assert len(await sent_items(stack, mailbox, done["internet_message_id"])) == 1


def restart_renewer(stack: Stack) -> None:
    port = free_port()
    stack.procs["renewer"] = Proc("renewer-restarted-sends", [*MAILSYNC, "renewer"],
                                  {**stack.env, "MAILSYNC_HTTP_PORT": str(port)})
    stack.procs["renewer"].wait_http_ok(f"http://127.0.0.1:{port}/readyz")
    stack.ports["renewer"] = port


async def test_kill_9_of_the_worker_mid_send_still_sends_exactly_once(stack: Stack, db, sends_tail):
    _, mailbox = await sender(stack)
    # Graph performs the send at once and answers 8 s later: the worker is killed while it waits.
    await stack.sandbox("POST", "/sandbox/send-faults", {"respond_delay_ms": 8000})
    try:
        status, queued = await call(stack, "POST", f"/api/v1/users/{mailbox.user_id}/send",
                                    send_body(["jane@client.example"]))
        assert status == 202
        send_id = queued["send_id"]
        imid = await db.fetchval("SELECT internet_message_id FROM sends WHERE send_id = $1::uuid", send_id)
        await wait_until(lambda: sent_items(stack, mailbox, imid), timeout=30, interval=0.05,
                         what="Graph holding the sent message")
        stack.procs["renewer"].kill()  # kill -9 between Graph accepting and mailsync recording
        row = await db.fetchrow("SELECT status, in_doubt, attempts FROM sends WHERE send_id = $1::uuid", send_id)
        assert (row["status"], row["in_doubt"], row["attempts"]) == ("queued", True, 1)
        await stack.sandbox("POST", "/sandbox/send-faults", {"reset": True})
        # The dead worker's lease would lapse in two minutes; let it lapse now.
        await db.execute("UPDATE sends SET lease_until = now() - interval '1 second' WHERE send_id = $1::uuid",
                         send_id)
        restart_renewer(stack)
        done = await sends_tail.wait_for(type="send.completed", send_id=send_id, timeout=40)
    finally:
        await stack.sandbox("POST", "/sandbox/send-faults", {"reset": True})
    assert done["internet_message_id"] == imid
    assert len(await sent_items(stack, mailbox, imid)) == 1  # exactly one message at Graph
    assert await db.fetchval("SELECT attempts FROM sends WHERE send_id = $1::uuid", send_id) == 1


async def test_over_thirty_a_minute_waits_with_the_reason_then_goes(stack: Stack, db, sends_tail):
    _, mailbox = await sender(stack)
    ids = []
    started = time.monotonic()
    for i in range(31):
        status, queued = await call(stack, "POST", f"/api/v1/users/{mailbox.user_id}/send",
                                    send_body([f"r{i}@client.example"], key=f"burst-{i}"))
        assert status == 202, queued
        ids.append(queued["send_id"])

    async def thirty_sent_one_waiting() -> list[Any] | None:
        rows = await db.fetch("SELECT status, error FROM sends WHERE user_id = $1", mailbox.user_id)
        sent = [r for r in rows if r["status"] == "sent"]
        waiting = [r for r in rows if r["status"] == "queued" and r["error"]]
        return waiting if len(sent) == 30 and len(waiting) == 1 else None

    waiting = await wait_until(thirty_sent_one_waiting, timeout=60, what="30 sent and the 31st held back")
    assert "30 messages a minute" in waiting[0]["error"]
    views = [(await call(stack, "GET", f"/api/v1/sends/{send_id}"))[1] for send_id in ids]
    held = [v for v in views if v["status"] == "queued"]
    assert len(held) == 1 and "30 messages a minute" in held[0]["error"]  # the API says why, nothing dropped
    done = await sends_tail.wait_for(type="send.completed", send_id=held[0]["send_id"], timeout=90)
    print(f"\n31 sends in a burst: the 31st held back, sent {time.monotonic() - started:.1f} s after the first")
    assert await db.fetchval("SELECT count(*) FROM sends WHERE user_id = $1 AND status = 'sent'",
                             mailbox.user_id) == 31
    assert len(await sent_items(stack, mailbox, done["internet_message_id"])) == 1


async def test_bad_input_and_missing_permission(stack: Stack, db):
    account, mailbox = await sender(stack)
    path = f"/api/v1/users/{mailbox.user_id}/send"
    for body, words in (
        (send_body(["not-an-address"]), "to[0] is not a valid email address"),
        (send_body([f"r{i}@x.example" for i in range(501)]), "at most 500"),
        (send_body(["a@x.example"], body_type="rtf"), "body_type"),
        (send_body(["a@x.example"], body="x" * (600 * 1024)), "512 KB"),
        ({"to": ["a@x.example"]}, "idempotency_key"),
        ([], "JSON object"),
    ):
        status, error = await call(stack, "POST", path, body)
        assert status == 400 and words in error["error"]["message"], (words, error)
    assert stack.http is not None
    async with stack.http.post(f"{stack.api_url}{path}", data=b"{nope", headers=stack.api_headers) as resp:
        assert resp.status == 400
    idle = await stack.new_mailbox(account, connect=False)
    status, error = await call(stack, "POST", f"/api/v1/users/{idle.user_id}/send", send_body(["a@x.example"]))
    assert status == 409 and error["error"]["code"] == "not_connected"
    await db.execute("UPDATE mailbox_connections SET scopes = array_remove(scopes, 'Mail.Send')"
                     " WHERE connection_id = $1::uuid", mailbox.connection_id)
    status, error = await call(stack, "POST", path, send_body(["a@x.example"]))
    assert status == 409 and error["error"]["code"] == "mail_send_not_granted" and "Mail.Send" in error["error"][
        "message"]
    assert await db.fetchval("SELECT count(*) FROM sends WHERE account_id = $1", account) == 0
    status, _ = await call(stack, "POST", "/api/v1/users/nobody-here/send", send_body(["a@x.example"]))
    assert status == 404


async def test_another_accounts_token_sees_nothing(stack: Stack, db):
    account, mailbox = await sender(stack)
    status, queued = await call(stack, "POST", f"/api/v1/users/{mailbox.user_id}/send",
                                send_body(["jane@client.example"]), token=account_token(stack, account))
    assert status == 202  # the account's own token may send
    stranger = account_token(stack, stack.new_account())
    status, error = await call(stack, "GET", f"/api/v1/sends/{queued['send_id']}", token=stranger)
    status_unknown, unknown = await call(stack, "GET", f"/api/v1/sends/{uuid.uuid4()}", token=stranger)
    assert status == status_unknown == 404 and error == unknown
    status, error = await call(stack, "POST", f"/api/v1/users/{mailbox.user_id}/send",
                               send_body(["jane@client.example"]), token=stranger)
    assert status == 404
    assert await db.fetchval("SELECT count(*) FROM sends WHERE user_id = $1", mailbox.user_id) == 1
    status, own = await call(stack, "GET", f"/api/v1/sends/{queued['send_id']}", token=account_token(stack, account))
    assert status == 200 and own["user_id"] == mailbox.user_id


async def test_a_tenant_mode_mailbox_sends_with_the_apps_permission(stack: Stack, db, sends_tail):
    """Nobody signed in: the administrator's consent (application permissions, Mail.Send among them) is enough."""
    account, tenant = stack.new_account(), str(uuid.uuid4())
    mailbox = await stack.new_mailbox(account, connect=False, tenant_id=tenant, auto_consent=False)
    await stack.sandbox("POST", f"/sandbox/tenants/{tenant}/policy", {"auto_admin_consent": True})
    status, created = await stack.api("POST", f"/api/v1/accounts/{account}/tenant-connection", {"tenant_id": tenant})
    assert status == 200, created
    assert stack.http is not None
    async with stack.http.get(created["admin_consent_url"]) as resp:
        assert resp.status == 200

    async def enrolled() -> bool:
        _, view = await call(stack, "GET", f"/api/v1/users/{mailbox.user_id}/connection")
        return view.get("mode") == "tenant" and view.get("status") == "connected"

    await wait_until(enrolled, timeout=45, what="the mailbox enrolled in tenant mode")
    status, queued = await call(stack, "POST", f"/api/v1/users/{mailbox.user_id}/send",
                                send_body(["jane@client.example"]))
    assert status == 202, queued
    done = await sends_tail.wait_for(type="send.completed", send_id=queued["send_id"], timeout=30)
    assert len(await sent_items(stack, mailbox, done["internet_message_id"])) == 1
