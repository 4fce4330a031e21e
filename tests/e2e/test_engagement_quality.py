"""Issue 15, engagement quality, through the real stack (Kafka, PostgreSQL, the sandbox, the services):
automated mail, the account's capture tier and its purge, and a user's own never_log list."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from services.core.domain import events
from tests.support.asyncapi import validate
from tests.support.procs import MAILSYNC, ROOT
from tests.support.stack import Mailbox, Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

NEWSLETTER = {"List-Unsubscribe": "<mailto:leave@shop.example?subject=unsubscribe>",
              "List-Id": "Shop news <news.shop.example>"}


async def decision_of(db, user_id: str, imid: str, timeout: float = 30.0):
    return await wait_until(lambda: db.fetchrow(
        "SELECT * FROM match_decisions WHERE user_id = $1 AND message_key = $2", user_id, imid),
        what=f"a decision on {imid}", timeout=timeout)


def codes(row_or_answer: Any) -> list[str]:
    return [r["code"] for r in row_or_answer["reasons"]]


async def set_account(stack: Stack, account: str, **fields: Any) -> None:
    """account.upserted through Kafka; waits until the matcher has applied it."""
    await stack.publish_directory(events.envelope("account.upserted", {"account_id": account, "name": "Acme",
                                                                       **fields}))
    capture = fields.get("capture", "subject")
    exclude = fields.get("exclude_automated", True)
    await stack.wait_row("SELECT 1 FROM accounts WHERE account_id = $1 AND capture = $2 AND exclude_automated = $3"
                         " AND domain_matching = $4", account, capture, exclude, fields.get("domain_matching", False),
                         what=f"account {account} settings {fields}")


async def set_never_log(stack: Stack, mailbox: Mailbox, never_log: list[str], role: str = "member") -> None:
    await stack.publish_directory(events.envelope("user.upserted", {
        "user_id": mailbox.user_id, "account_id": mailbox.account_id, "email": mailbox.address, "aliases": [],
        "never_log": never_log, "role": role}))
    await stack.wait_row("SELECT 1 FROM users WHERE user_id = $1 AND cardinality(never_log) = $2 AND role = $3",
                         mailbox.user_id, len(never_log), role, what=f"{mailbox.user_id}'s never_log")


async def diagnose(stack: Stack, user_id: str, imid: str) -> dict[str, Any]:
    status, answer = await stack.api("GET", f"/api/v1/diagnose?user_id={user_id}"
                                            f"&internet_message_id={quote(imid, safe='')}")
    assert status == 200, answer
    return dict(answer)


async def mailsync(stack: Stack, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*MAILSYNC, *args, env=stack.env, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def timeline(stack: Stack, contact: str) -> list[dict[str, Any]]:
    status, page = await stack.api("GET", f"/api/v1/contacts/{contact}/engagements")
    assert status == 200, page
    return list(page["engagements"])


# --- automated mail ---------------------------------------------------------------------------


async def test_a_newsletter_from_a_contact_is_not_an_engagement_and_diagnose_says_why(stack: Stack, db,
                                                                                       engagements_tail):
    account = stack.new_account()
    client = f"client-{uuid.uuid4().hex[:8]}"
    await stack.publish_directory(events.envelope("client.upserted", {
        "client_id": client, "account_id": account, "name": "Shop", "domains": ["shop.example"]}))
    await set_account(stack, account, domain_matching=True)  # exclude_automated defaults to true
    contact = await stack.add_contact(account, "ana@shop.example", client_id=client)
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)

    # From the contact's own address, and from the contact's (client's) domain: both bulk, neither kept.
    news = await stack.deliver(mailbox, subject="Our spring sale", headers=NEWSLETTER, **{"from": "ana@shop.example"})
    bulk = await stack.deliver(mailbox, subject="Weekly digest", headers={"precedence": "Bulk"},
                               **{"from": "news@shop.example"})
    robot = await stack.deliver(mailbox, subject="Your order shipped", headers={"Auto-Submitted": "auto-generated"},
                                **{"from": "noreply@shop.example"})
    reply = await stack.deliver(mailbox, subject="Re: renewal", headers={"Auto-Submitted": "no"},
                                **{"from": "ana@shop.example"})

    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=reply, timeout=30)
    assert event["contact_ids"] == [contact] and event["subject"] == "Re: renewal"
    for imid, evidence in ((news, "List-Unsubscribe"), (bulk, "Precedence"), (robot, "Auto-Submitted")):
        row = await decision_of(db, mailbox.user_id, imid)
        assert row["decision"] == "excluded" and codes(row)[0] == "automated", row
        explained = await diagnose(stack, mailbox.user_id, imid)
        assert explained["decision"] == "excluded" and explained["reasons"][0]["code"] == "automated"
        assert evidence in explained["reasons"][0]["detail"]
    assert await db.fetchval("SELECT count(*) FROM engagements WHERE account_id = $1", account) == 1
    await engagements_tail.poll()
    assert not [e for e in engagements_tail.matching(type="engagement.created", account_id=account)
                if e["internet_message_id"] in (news, bulk, robot)]

    # The CLI says the same.
    code, out, err = await mailsync(stack, "diagnose", "--user", mailbox.user_id, "--internet-message-id", news)
    assert code == 0, err
    assert out.startswith("decision: excluded") and "[automated]" in out and "List-Unsubscribe" in out


async def test_with_exclude_automated_off_a_newsletter_from_a_contact_is_an_engagement(stack: Stack, db,
                                                                                      engagements_tail):
    account = stack.new_account()
    await set_account(stack, account, exclude_automated=False)
    contact = await stack.add_contact(account, "ana@shop.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    news = await stack.deliver(mailbox, subject="Our spring sale", headers=NEWSLETTER, **{"from": "ana@shop.example"})
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=news, timeout=30)
    assert event["contact_ids"] == [contact]
    assert "automated" not in codes(await decision_of(db, mailbox.user_id, news))


async def test_header_checks_cost_no_extra_graph_request(stack: Stack, db):
    """The matcher reads internetMessageHeaders in the same GET as the message (one request per message),
    and the figures of the alternative (one more GET for each message that would otherwise match)."""
    account = stack.new_account()
    contact = await stack.add_contact(account, "ana@shop.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    from tests.support.stack import quiet

    await quiet(stack, db, mailbox)
    warm = await stack.deliver(mailbox, **{"from": "ana@shop.example"})  # folder ids resolved once per mailbox
    await decision_of(db, mailbox.user_id, warm)

    async def served() -> int:
        stats = await stack.sandbox("GET", "/sandbox/stats")
        return sum(int(stats["mailboxes"].get(key, {}).get("requests", 0))
                   for key in {mailbox.graph_id, mailbox.address})

    before = await served()
    # A realistic mix: 4 in 10 from the contact (1 of them a newsletter), 6 in 10 from strangers (2 of them bulk),
    # each with the transport headers Exchange Online mail typically carries.
    imids = []
    for i in range(20):
        personal, from_contact = i % 5 != 0, i % 10 < 4
        headers = TRANSPORT if personal else {**TRANSPORT, **NEWSLETTER}
        imids.append(await stack.deliver(mailbox, headers=headers, **{
            "from": "ana@shop.example" if from_contact else f"someone{i}@elsewhere.example"}))
    rows = [await decision_of(db, mailbox.user_id, imid) for imid in imids]
    requests = await served() - before
    # Candidates: what would match but for the header check (the alternative's second GET).
    candidates = sum(1 for r in rows if r["decision"] == "matched"
                     or ("automated" in codes(r) and "ana@shop.example" in r["participant_addresses"]))
    plain, with_headers = await _response_bytes(stack, mailbox)
    figures = {"messages": len(imids), "graph_requests": requests,
               "extra_requests_per_1000_headers_in_select": 1000 * (requests - len(imids)) / len(imids),
               "extra_requests_per_1000_second_get_for_candidates": 1000 * candidates / len(imids),
               "response_bytes_per_message_without_headers": plain,
               "response_bytes_per_message_with_headers": with_headers}
    print("header check cost:", json.dumps(figures))
    assert requests == len(imids), figures  # one GET per message: headers ride in its $select
    assert candidates > 0


# Transport headers of the kind Exchange Online mail carries (sizes typical, contents made up).
TRANSPORT = {
    "Received": "from EUR05-AM6-obe.outbound.protection.outlook.com (2a01:111:f400:7e1b::600) by "
                "AM6PR04MB5000.eurprd04.prod.outlook.com with HTTPS; Tue, 1 Dec 2026 10:00:00 +0000",
    "ARC-Seal": "i=1; a=rsa-sha256; s=arcselector9901; d=microsoft.com; cv=none; b=" + "Q" * 344,
    "ARC-Message-Signature": "i=1; a=rsa-sha256; c=relaxed/relaxed; d=microsoft.com; s=arcselector9901; "
                             "h=From:Date:Subject:Message-ID:Content-Type:MIME-Version; bh=" + "a" * 44
                             + "; b=" + "R" * 344,
    "ARC-Authentication-Results": "i=1; mx.microsoft.com 1; spf=pass smtp.mailfrom=shop.example; dmarc=pass "
                                  "action=none header.from=shop.example; dkim=pass header.d=shop.example",
    "DKIM-Signature": "v=1; a=rsa-sha256; c=relaxed/relaxed; d=shop.example; s=selector1; "
                      "h=From:Date:Subject:Message-ID; bh=" + "b" * 44 + "; b=" + "S" * 344,
    "Authentication-Results": "spf=pass (sender IP is 40.107.22.60) smtp.mailfrom=shop.example; dkim=pass "
                              "(signature was verified) header.d=shop.example;dmarc=pass action=none",
    "X-MS-Exchange-Organization-SCL": "1",
    "X-Forefront-Antispam-Report": "CIP:40.107.22.60;CTRY:NL;LANG:en;SCL:1;SRV:;IPV:NLI;SFV:NSPM;H:EUR05;"
                                   "PTR:mail.example;CAT:NONE;SFS:(13230031)(4636009);DIR:INB;",
    "X-Microsoft-Antispam-Message-Info": "T" * 1400,
}


async def _response_bytes(stack: Stack, mailbox: Mailbox) -> tuple[float, float]:
    """Mean size of the matcher's GET answer per message, without and with internetMessageHeaders."""
    from services.matcher.graph_message import message_select

    token = (await stack.sandbox("POST", "/sandbox/tokens", {"user_id": mailbox.graph_id,
                                                              "scopes": ["Mail.Read"]}))["access_token"]
    listed = (await stack.sandbox("GET", f"/sandbox/mailboxes/{mailbox.graph_id}/messages"))["value"]
    sizes: dict[bool, list[int]] = {False: [], True: []}
    assert stack.http is not None
    for message in listed:
        for headers in (False, True):
            url = (f"{stack.sandbox_url}/v1.0/users/{mailbox.graph_id}/messages/{quote(message['id'], safe='')}"
                   f"?$select={message_select(headers=headers, preview=False)}")
            async with stack.http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200, await resp.text()
                sizes[headers].append(len(await resp.read()))
    return sum(sizes[False]) / len(sizes[False]), sum(sizes[True]) / len(sizes[True])


# --- capture tiers ----------------------------------------------------------------------------

BODY = "Hi Ana, about the renewal: the new terms are attached. Best, Sam"


@pytest.mark.parametrize("tier", ["metadata", "subject", "preview"])
async def test_each_capture_tier_keeps_and_publishes_exactly_its_fields(stack: Stack, db, engagements_tail, tier):
    account = stack.new_account()
    await set_account(stack, account, capture=tier)
    contact = await stack.add_contact(account, "ana@shop.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    imid = await stack.deliver(mailbox, subject="Renewal terms", body=BODY, **{"from": "ana@shop.example"})

    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=30)
    validate(event)
    expected = {"metadata": {}, "subject": {"subject": "Renewal terms"},
                "preview": {"subject": "Renewal terms", "preview": BODY}}[tier]
    assert {k: event[k] for k in ("subject", "preview") if k in event} == expected
    assert event["mailbox_user_ids"] == [mailbox.user_id] and event["mailbox_addresses"] == [mailbox.address]

    [item] = await timeline(stack, contact)
    assert {k: item[k] for k in ("subject", "preview") if k in item} == expected
    assert item["mailbox_addresses"] == [mailbox.address]

    row = await db.fetchrow("SELECT subject, preview, capture FROM engagements WHERE engagement_id = $1::uuid",
                            event["engagement_id"])
    assert (row["subject"], row["preview"], row["capture"]) == (expected.get("subject"), expected.get("preview"),
                                                                tier)
    decision = await decision_of(db, mailbox.user_id, imid)
    assert decision["subject"] == expected.get("subject")
    assert BODY not in json.dumps([dict(r) for r in await db.fetch(
        "SELECT * FROM match_decisions WHERE user_id = $1", mailbox.user_id)], default=str)


async def test_moving_down_to_metadata_and_purging_leaves_no_subject_or_preview(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    await set_account(stack, account, capture="preview")
    contact = await stack.add_contact(account, "ana@shop.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    kept = await stack.deliver(mailbox, subject="Renewal terms", body=BODY, **{"from": "ana@shop.example"})
    stranger = await stack.deliver(mailbox, subject="Private matter", **{"from": "friend@elsewhere.example"})
    await engagements_tail.wait_for(type="engagement.created", internet_message_id=kept, timeout=30)
    await decision_of(db, mailbox.user_id, stranger)

    await set_account(stack, account, capture="metadata")
    # The new tier applies to new mail at once...
    later = await stack.deliver(mailbox, subject="Follow-up", body=BODY, **{"from": "ana@shop.example"})
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=later, timeout=30)
    assert "subject" not in event and "preview" not in event
    # ...and what is stored above it stays until the purge.
    assert await db.fetchval("SELECT count(*) FROM engagements WHERE account_id = $1 AND preview IS NOT NULL",
                             account) == 1

    code, out, err = await mailsync(stack, "purge-content", "--account", account)
    assert code == 0, err
    assert "capture: metadata" in out and "trimmed 1 engagement(s)" in out

    assert await db.fetchval(
        "SELECT count(*) FROM engagements WHERE account_id = $1 AND (subject IS NOT NULL OR preview IS NOT NULL"
        " OR capture <> 'metadata')", account) == 0
    assert await db.fetchval(
        "SELECT count(*) FROM match_decisions WHERE account_id = $1 AND subject IS NOT NULL", account) == 0
    assert await db.fetchval("SELECT count(*) FROM engagements WHERE account_id = $1", account) == 2
    assert all("subject" not in item and "preview" not in item for item in await timeline(stack, contact))

    code, _, err = await mailsync(stack, "purge-content", "--account", "acct-does-not-exist")
    assert code == 2 and "no account" in err


# --- never_log --------------------------------------------------------------------------------


async def test_never_log_keeps_one_users_copy_off_while_a_colleagues_copy_makes_the_engagement(
        stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "Pat@Partner.example")
    await stack.wait_contact(contact)
    alice, bob = await stack.new_mailbox(account), await stack.new_mailbox(account)
    await set_never_log(stack, alice, ["@PARTNER.example"], role="admin")

    message = {"from": "pat@partner.example", "to": [alice.address, bob.address], "subject": "Dinner on Friday?"}
    imid = await stack.deliver(alice, **message)
    row = await decision_of(db, alice.user_id, imid)
    assert row["decision"] == "excluded" and codes(row)[0] == "user_excluded", row
    assert await db.fetchval("SELECT count(*) FROM engagements WHERE account_id = $1", account) == 0

    await stack.deliver(bob, internet_message_id=imid, **message)
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=30)
    assert event["mailbox_user_ids"] == [bob.user_id] and event["mailbox_addresses"] == [bob.address]
    assert event["contact_ids"] == [contact]

    # Alice's copy is redelivered (the hourly poll, a duplicate notification): still only Bob's.
    await stack.sandbox("PATCH", f"/sandbox/mailboxes/{alice.graph_id}/messages/"
                                 + quote(await _sandbox_id(stack, alice, imid), safe=""), {"is_read": True})
    await wait_until(lambda: db.fetchval(
        "SELECT decided_at > $3 FROM match_decisions WHERE user_id = $1 AND message_key = $2",
        alice.user_id, imid, row["decided_at"]), what="alice's copy decided again", timeout=30)
    [item] = await timeline(stack, contact)
    assert item["mailbox_user_ids"] == [bob.user_id] and item["mailbox_addresses"] == [bob.address]
    assert await db.fetchval("SELECT count(*) FROM engagements WHERE account_id = $1", account) == 1

    explained = await diagnose(stack, alice.user_id, imid)
    assert explained["decision"] == "excluded" and explained["reasons"][0]["code"] == "user_excluded"
    assert "partner.example" in explained["reasons"][0]["detail"]
    assert (await diagnose(stack, bob.user_id, imid))["decision"] == "matched"


async def _sandbox_id(stack: Stack, mailbox: Mailbox, imid: str) -> str:
    listed = await stack.sandbox("GET", f"/sandbox/mailboxes/{mailbox.graph_id}/messages")
    return str(next(m["id"] for m in listed["value"] if m.get("internet_message_id", m.get("internetMessageId"))
                    == imid))


# --- the directory records ----------------------------------------------------------------------


async def test_new_directory_fields_are_stored_canonically_and_bad_ones_dead_lettered(stack: Stack, db):
    from tests.support.kafka_tail import Tail

    dlq = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "crm.directory.v1.dlq").start()
    try:
        account = stack.new_account()
        mailbox = await stack.new_mailbox(account, connect=False)
        user = {"user_id": mailbox.user_id, "account_id": account, "email": mailbox.address}
        bad = [
            ("account.upserted", {"account_id": account, "capture": "everything"}, "capture must be one of"),
            ("account.upserted", {"account_id": account, "exclude_automated": "yes"}, "exclude_automated must be"),
            ("user.upserted", {**user, "never_log": ["not an address"]}, "never_log holds 'not an address'"),
            ("user.upserted", {**user, "role": "owner"}, "role must be one of"),
        ]
        for kind, payload, _ in bad:
            await stack.publish_directory(events.envelope(kind, payload))
        await stack.publish_directory(events.envelope("user.upserted", {
            **user, "never_log": ["Mom@Family.Example", " @Friends.EXAMPLE", "mom@family.example"], "role": "admin"}))
        await stack.wait_row("SELECT 1 FROM users WHERE user_id = $1 AND role = 'admin'", mailbox.user_id,
                             what="the user's never_log and role")
        for _, _, reason in bad:
            await wait_until(lambda r=reason: _dead_with(dlq, r), timeout=30, what=f"a dead letter saying {reason!r}")
    finally:
        await dlq.stop()
    row = await db.fetchrow("SELECT never_log, role FROM users WHERE user_id = $1", mailbox.user_id)
    assert list(row["never_log"]) == ["mom@family.example", "@friends.example"] and row["role"] == "admin"
    settings = await db.fetchrow("SELECT capture, exclude_automated FROM accounts WHERE account_id = $1", account)
    assert (settings["capture"], settings["exclude_automated"]) == ("subject", True)  # the defaults stand


async def _dead_with(dlq: Any, reason: str) -> bool:
    await dlq.poll()
    return any(reason in str(v.get("error", "")) for v in dlq.matching(type="dlq.record"))


async def test_pasted_headers_of_a_newsletter_are_explained_as_automated(stack: Stack):
    account = stack.new_account()
    contact = await stack.add_contact(account, "ana@shop.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    never_seen = (f"Message-ID: <{uuid.uuid4()}@shop.example>\nFrom: Ana <ana@shop.example>\nTo: {mailbox.address}\n"
                  "Date: Sun, 29 Nov 2026 10:00:00 +0000\nSubject: Spring sale\n"
                  "list-unsubscribe: <mailto:leave@shop.example>\n")
    status, explained = await stack.api("POST", "/api/v1/diagnose", {"user_id": mailbox.user_id,
                                                                     "headers": never_seen})
    assert status == 200 and explained["decision"] == "not_seen"
    would = next(r for r in explained["reasons"] if r["code"] == "would_be")
    assert "would be excluded" in would["detail"] and "List-Unsubscribe" in would["detail"]
