"""Mail in the sandbox becomes an engagement, through real Kafka and PostgreSQL (issue: walking skeleton)."""

from __future__ import annotations

import uuid

import pytest

from services.core.domain import events
from tests.support.asyncapi import validate
from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


async def _engagement_rows(db, account_id: str, imid: str) -> list:
    return await db.fetch("SELECT * FROM engagements WHERE account_id = $1 AND internet_message_id = $2",
                          account_id, imid)


async def _decision(db, user_id: str, imid: str):
    return await db.fetchrow("SELECT * FROM match_decisions WHERE user_id = $1 AND message_key = $2", user_id, imid)


async def test_mail_from_a_contact_becomes_one_engagement_and_one_event(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "jane.doe@acme.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)

    imid = await stack.deliver(mailbox, **{"from": "Jane Doe <Jane.Doe@ACME.example>", "subject": "Renewal"})

    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid)
    validate(event)  # the feed's consumers rely on docs/asyncapi.yaml
    rows = await _engagement_rows(db, account, imid)
    assert len(rows) == 1
    assert str(rows[0]["engagement_id"]) == event["engagement_id"]
    assert event["account_id"] == account and event["contact_ids"] == [contact]
    assert event["direction"] == "inbound" and event["subject"] == "Renewal"
    assert event["mailbox_user_ids"] == [mailbox.user_id] and event["source"] == "webhook"
    assert {"address": "jane.doe@acme.example", "role": "from"}.items() <= event["participants"][0].items()
    status, page = await stack.api("GET", f"/api/v1/contacts/{contact}/engagements")
    assert status == 200 and [e["engagement_id"] for e in page["engagements"]] == [event["engagement_id"]]


async def test_mail_from_an_unknown_address_is_no_engagement(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    mailbox = await stack.new_mailbox(account)

    imid = await stack.deliver(mailbox, **{"from": "stranger@nowhere.example"})

    decision = await wait_until(lambda: _decision(db, mailbox.user_id, imid), what="the match decision")
    assert decision["decision"] == "not_matched"
    assert "no_known_participant" in [r["code"] for r in decision["reasons"]]
    assert await _engagement_rows(db, account, imid) == []
    await engagements_tail.poll()
    assert engagements_tail.matching(internet_message_id=imid) == []


async def _subscription_for(stack: Stack, mailbox) -> dict:
    subs = await stack.sandbox("GET", "/sandbox/subscriptions")
    items = subs["value"] if isinstance(subs, dict) else subs
    return next(s for s in items if mailbox.graph_id in s["resource"])


def _notification(sub: dict, mailbox, message_id: str, client_state: str | None = None) -> dict:
    resource = f"Users/{mailbox.graph_id}/Messages/{message_id}"
    return {"value": [{
        "subscriptionId": sub["id"], "subscriptionExpirationDateTime": sub["expirationDateTime"],
        "clientState": sub["clientState"] if client_state is None else client_state, "changeType": "created",
        "resource": resource, "tenantId": sub.get("tenantId", mailbox.tenant_id),
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": resource,
                         "@odata.etag": 'W/"x"', "id": message_id},
    }]}


async def test_the_same_notification_twice_is_one_engagement(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "buyer@client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    imid = await stack.deliver(mailbox, **{"from": "buyer@client.example"})
    first = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid)
    decision = await _decision(db, mailbox.user_id, imid)
    sub = await _subscription_for(stack, mailbox)

    for _ in range(2):  # Graph redelivers: the very same notification, twice more
        async with stack.http.post(f"{stack.api_url}/graph/notifications",
                                   json=_notification(sub, mailbox, decision["message_id"])) as resp:
            assert resp.status == 202
    # A later message on the same connection (same partition) proves the duplicates were processed.
    marker = await stack.deliver(mailbox, **{"from": "buyer@client.example", "subject": "marker"})
    await engagements_tail.wait_for(type="engagement.created", internet_message_id=marker)

    assert len(await _engagement_rows(db, account, imid)) == 1
    await engagements_tail.poll()
    ids = {e["event_id"] for e in engagements_tail.matching(internet_message_id=imid)}
    assert ids == {first["event_id"]}


async def test_wrong_client_state_publishes_nothing(stack: Stack, notifications_tail):
    account = stack.new_account()
    mailbox = await stack.new_mailbox(account)
    sub = await _subscription_for(stack, mailbox)
    forged_id, marker_id = f"forged-{uuid.uuid4()}", f"marker-{uuid.uuid4()}"

    async with stack.http.post(f"{stack.api_url}/graph/notifications",
                               json=_notification(sub, mailbox, forged_id, client_state="not-the-secret")) as resp:
        assert resp.status == 202  # answered, so an attacker learns nothing, but not trusted
    async with stack.http.post(f"{stack.api_url}/graph/notifications",
                               json=_notification(sub, mailbox, marker_id)) as resp:
        assert resp.status == 202

    await notifications_tail.wait_for(type="message.changed", message_id=marker_id)
    assert notifications_tail.matching(message_id=forged_id) == []


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"value": [{"changeType": "created"}]}'])
async def test_bad_bodies_get_400_with_a_message(stack: Stack, body: bytes):
    async with stack.http.post(f"{stack.api_url}/graph/notifications", data=body,
                               headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["message"]


async def test_validation_handshake_echoes_the_decoded_token(stack: Stack):
    token = "Validation: Token+with/odd chars&=?"
    for path in ("/graph/notifications", "/graph/lifecycle"):
        async with stack.http.post(f"{stack.api_url}{path}", params={"validationToken": token}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            assert await resp.text() == token


async def test_api_requires_the_bearer_token(stack: Stack):
    async with stack.http.get(f"{stack.api_url}/api/v1/users/nobody/connection") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_directory_events_are_versioned_envelopes():
    value = events.envelope("contact.upserted", {"contact_id": "c"})
    assert value["version"] == 1 and value["type"] == "contact.upserted" and uuid.UUID(value["event_id"])
