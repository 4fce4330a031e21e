"""Matching that users trust, through real Kafka, PostgreSQL and the sandbox."""

from __future__ import annotations

import pytest

from services.core.domain import events
from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


async def decision_of(db, user_id: str, imid: str):
    return await wait_until(lambda: db.fetchrow(
        "SELECT * FROM match_decisions WHERE user_id = $1 AND message_key = $2", user_id, imid),
        what=f"a decision on {imid}")


async def test_mail_sent_from_an_alias_is_outbound(stack: Stack, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "cfo@bigclient.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account, aliases=("sales@" + account + ".example",))
    imid = await stack.deliver(mailbox, folder="sentitems", **{"from": f"Sales <sales@{account}.example>",
                                                                "to": ["CFO@BigClient.example"]})
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid)
    assert event["direction"] == "outbound" and event["contact_ids"] == [contact]


async def test_same_email_in_two_mailboxes_is_one_engagement_with_both(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "ana@partner.example")
    await stack.wait_contact(contact)
    alice, bob = await stack.new_mailbox(account), await stack.new_mailbox(account)
    imid = await stack.deliver(alice, **{"from": "ana@partner.example", "to": [alice.address, bob.address]})
    await stack.deliver(bob, internet_message_id=imid, **{"from": "ana@partner.example",
                                                          "to": [alice.address, bob.address]})

    async def both() -> list:
        rows = await db.fetch("SELECT m.user_id FROM engagement_mailboxes m JOIN engagements e USING (engagement_id)"
                              " WHERE e.account_id = $1 AND e.internet_message_id = $2", account, imid)
        return rows if len(rows) == 2 else []

    rows = await wait_until(both, what="the engagement seen in both mailboxes")
    assert sorted(r["user_id"] for r in rows) == sorted([alice.user_id, bob.user_id])
    assert await db.fetchval("SELECT count(*) FROM engagements WHERE account_id = $1 AND internet_message_id = $2",
                             account, imid) == 1
    await engagements_tail.poll()
    assert len({e["event_id"] for e in engagements_tail.matching(type="engagement.created",
                                                                  internet_message_id=imid)}) == 1


async def test_a_contact_added_later_turns_earlier_mail_into_an_engagement(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    mailbox = await stack.new_mailbox(account)
    imid = await stack.deliver(mailbox, **{"from": "new.person@prospect.example", "subject": "Intro"})
    assert (await decision_of(db, mailbox.user_id, imid))["decision"] == "not_matched"

    contact = await stack.add_contact(account, "New.Person@prospect.example")
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid)
    assert event["contact_ids"] == [contact] and event["source"] == "rematch" and event["subject"] == "Intro"
    assert (await decision_of(db, mailbox.user_id, imid))["decision"] == "matched"


async def test_a_secondary_address_links_an_existing_engagement(stack: Stack, engagements_tail):
    account = stack.new_account()
    first = await stack.add_contact(account, "lead@acme.example")
    await stack.wait_contact(first)
    mailbox = await stack.new_mailbox(account)
    imid = await stack.deliver(mailbox, **{"from": "lead@acme.example", "cc": ["lead.private@mail.example"]})
    created = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid)

    second = await stack.add_contact(account, "other@acme.example", "lead.private@mail.example")
    linked = await engagements_tail.wait_for(type="engagement.linked", engagement_id=created["engagement_id"])
    assert linked["contact_ids"] == sorted([first, second])

    await stack.publish_directory(events.envelope("contact.deleted", {"contact_id": second, "account_id": account}))
    unlinked = await engagements_tail.wait_for(type="engagement.linked", engagement_id=created["engagement_id"],
                                               contact_ids=[first])
    assert unlinked["contact_ids"] == [first]


@pytest.mark.parametrize(("folder", "extra", "code"), [
    ("junkemail", {}, "excluded_folder"),
    ("drafts", {}, "excluded_folder"),
    ("inbox", {"internal": True}, "internal_only"),
])
async def test_junk_drafts_and_internal_mail_never_match(stack: Stack, db, folder, extra, code):
    account = stack.new_account()
    contact = await stack.add_contact(account, "vip@client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    colleague = await stack.new_mailbox(account, connect=False)
    sender = colleague.address if extra.get("internal") else "vip@client.example"
    imid = await stack.deliver(mailbox, folder=folder, **{"from": sender})
    decision = await decision_of(db, mailbox.user_id, imid)
    assert decision["decision"] in ("excluded", "not_matched")
    assert code in [r["code"] for r in decision["reasons"]]
    assert await db.fetchval("SELECT count(*) FROM engagements WHERE internet_message_id = $1", imid) == 0

    status, explained = await stack.api("GET", f"/api/v1/diagnose?user_id={mailbox.user_id}&internet_message_id="
                                        + imid.replace("<", "%3C").replace(">", "%3E").replace("@", "%40"))
    assert status == 200 and explained["decision"] == decision["decision"]
    assert code in [r["code"] for r in explained["reasons"]] and explained["folder"] == folder


async def test_diagnose_explains_mail_never_seen_from_pasted_headers(stack: Stack):
    account = stack.new_account()
    contact = await stack.add_contact(account, "boss@client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    headers = (f"Message-ID: <never-delivered@client.example>\nFrom: Boss <boss@client.example>\n"
               f"To: {mailbox.address}\nDate: Thu, 26 Nov 2026 10:00:00 +0000\nSubject: lost?\n")
    status, explained = await stack.api("POST", "/api/v1/diagnose", {"user_id": mailbox.user_id, "headers": headers})
    assert status == 200 and explained["decision"] == "not_seen"
    codes = [r["code"] for r in explained["reasons"]]
    assert codes[0] == "not_seen" and "connection_status" in codes
    would = next(r for r in explained["reasons"] if r["code"] == "would_be")
    assert "matched" in would["detail"] and contact in would["detail"]

    status, error = await stack.api("POST", "/api/v1/diagnose", {"user_id": mailbox.user_id, "headers": "From: x"})
    assert status == 400 and "Message-ID" in error["error"]["message"]
