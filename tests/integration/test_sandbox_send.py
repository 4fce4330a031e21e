"""The sandbox's sending surface over real HTTP: sendMail, drafts and their send, $filter on internetMessageId,
Exchange's sending limits and the permissions each call needs."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.sandbox_support import Env, env, servers

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["env", "servers"]

SEND_SCOPES = ["User.Read", "Mail.Read", "Mail.Send"]


def message(to: list[str], imid: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"subject": "Proposal", "body": {"contentType": "Text", "content": "Hi"},
                            "toRecipients": [{"emailAddress": {"address": a}} for a in to], **extra}
    if imid:
        body["internetMessageId"] = imid
    return body


async def find(env: Env, token: str, user: str, imid: str) -> list[dict[str, Any]]:
    query = quote(f"internetMessageId eq '{imid}'")
    status, page, _ = await env.graph("GET", f"/users/{user}/messages?$filter={query}&$select=id,isDraft,"
                                      "parentFolderId,internetMessageId,from,toRecipients", token)
    assert status == 200, page
    return list(page["value"])


async def folder_id(env: Env, token: str, user: str, name: str) -> str:
    status, folder, _ = await env.graph("GET", f"/users/{user}/mailFolders/{name}", token)
    assert status == 200
    return str(folder["id"])


async def test_send_mail_lands_in_sent_items_and_the_recipients_inbox(env: Env):
    sender, recipient = await env.mailbox(), await env.mailbox()
    token = await env.token(sender["user_id"], SEND_SCOPES)
    imid = f"<{uuid.uuid4().hex}@contoso.example>"
    prop = "String {4d2f7e0a-6b1c-4f3e-9a57-1c2b3d4e5f60} Name mailsyncSendId"
    status, body, _ = await env.graph("POST", "/me/sendMail", token, body={"message": message(
        [recipient["address"], "outside@fabrikam.example"], imid,
        singleValueExtendedProperties=[{"id": prop, "value": "send-1"}])})
    assert status == 202 and body is None
    found = await find(env, token, sender["user_id"], imid)
    assert len(found) == 1 and not found[0]["isDraft"]
    assert found[0]["parentFolderId"] == await folder_id(env, token, sender["user_id"], "sentitems")
    assert found[0]["from"]["emailAddress"]["address"] == sender["address"]
    stored = env.sb.mail.mailboxes[sender["user_id"]].messages[found[0]["id"]]
    assert stored.extended_properties == {prop: "send-1"}
    their = await env.token(recipient["user_id"])
    inbox = await find(env, their, recipient["user_id"], imid)
    assert len(inbox) == 1 and inbox[0]["parentFolderId"] == await folder_id(env, their, recipient["user_id"], "inbox")


async def test_save_to_sent_items_false_keeps_no_copy_but_delivers(env: Env):
    sender, recipient = await env.mailbox(), await env.mailbox()
    token = await env.token(sender["user_id"], SEND_SCOPES)
    imid = f"<{uuid.uuid4().hex}@contoso.example>"
    status, _, _ = await env.graph("POST", "/me/sendMail", token, body={
        "message": message([recipient["address"]], imid), "saveToSentItems": False})
    assert status == 202
    assert env.sb.mail.mailboxes[sender["user_id"]].messages == {}
    assert len(await find(env, await env.token(recipient["user_id"]), recipient["user_id"], imid)) == 1


async def test_sending_needs_mail_send_and_drafts_need_mail_read_write(env: Env):
    box = await env.mailbox()
    read_only = await env.token(box["user_id"])
    status, error, _ = await env.graph("POST", "/me/sendMail", read_only,
                                       body={"message": message(["a@fabrikam.example"])})
    assert status == 403 and error["error"]["code"] == "ErrorAccessDenied"
    sender = await env.token(box["user_id"], SEND_SCOPES)
    status, error, _ = await env.graph("POST", f"/users/{box['user_id']}/messages", sender,
                                       body=message(["a@fabrikam.example"]))
    # creating a draft is Mail.ReadWrite, not Mail.Send
    assert status == 403 and error["error"]["code"] == "ErrorAccessDenied"
    assert env.sb.mail.mailboxes[box["user_id"]].messages == {}


async def test_a_draft_with_its_own_internet_message_id_is_sent_and_moves(env: Env):
    box, recipient = await env.mailbox(), await env.mailbox()
    token = await env.token(box["user_id"], ["User.Read", "Mail.ReadWrite", "Mail.Send"])
    imid = f"<{uuid.uuid4().hex}@contoso.example>"
    status, draft, _ = await env.graph("POST", f"/users/{box['user_id']}/messages", token,
                                       body=message([recipient["address"]], imid))
    assert status == 201 and draft["isDraft"] and draft["internetMessageId"] == imid
    assert draft["parentFolderId"] == await folder_id(env, token, box["user_id"], "drafts")
    assert await env.token(recipient["user_id"]) and not env.sb.mail.mailboxes[recipient["user_id"]].messages
    status, _, _ = await env.graph("POST", f"/users/{box['user_id']}/messages/{quote(draft['id'], safe='')}/send",
                                   token)
    assert status == 202
    found = await find(env, token, box["user_id"], imid)
    assert [m["id"] for m in found] == [draft["id"]] and not found[0]["isDraft"]
    assert found[0]["parentFolderId"] == await folder_id(env, token, box["user_id"], "sentitems")
    status, error, _ = await env.graph("POST", f"/users/{box['user_id']}/messages/{quote(draft['id'], safe='')}"
                                       "/send", token)
    assert status == 400 and error["error"]["code"] == "ErrorInvalidOperation"  # sent already: not a draft
    assert len(env.sb.mail.mailboxes[recipient["user_id"]].messages) == 1


async def test_recipient_checks(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"], SEND_SCOPES)
    status, error, _ = await env.graph("POST", "/me/sendMail", token, body={"message": message([])})
    assert status == 400 and error["error"]["code"] == "ErrorInvalidRecipients"
    many = [f"r{i}@fabrikam.example" for i in range(501)]
    status, error, _ = await env.graph("POST", "/me/sendMail", token, body={"message": message(many)})
    assert status == 400 and error["error"]["code"] == "ErrorTooManyRecipients"
    status, error, _ = await env.graph("POST", "/me/sendMail", token,
                                       body={"message": message(["a@fabrikam.example"], "no-brackets")})
    assert status == 400 and "internetMessageId" in error["error"]["message"]


async def test_thirty_messages_a_minute_then_429_with_retry_after(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"], SEND_SCOPES)
    for i in range(30):
        status, _, _ = await env.graph("POST", "/me/sendMail", token,
                                       body={"message": message([f"r{i}@fabrikam.example"])})
        assert status == 202, i
    status, error, headers = await env.graph("POST", "/me/sendMail", token,
                                             body={"message": message(["late@fabrikam.example"])})
    assert status == 429 and 1 <= float(headers["Retry-After"]) <= 60
    assert "30 messages per minute" in error["error"]["message"]
    assert len(env.sb.mail.mailboxes[box["user_id"]].messages) == 30  # the refused one was not sent


async def test_ten_thousand_recipients_a_day(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"], SEND_SCOPES)
    day = env.sb.clock.time()
    # 9,900 recipients sent earlier today (more than a minute ago, so only the daily limit is in play)
    env.sb.mail.mailboxes[box["user_id"]].sent_log[:] = [(day - 3600 - i, 495) for i in range(20)]
    status, _, _ = await env.graph("POST", "/me/sendMail", token,
                                   body={"message": message([f"r{i}@fabrikam.example" for i in range(100)])})
    assert status == 202  # exactly 10,000
    status, error, headers = await env.graph("POST", "/me/sendMail", token,
                                             body={"message": message(["one.more@fabrikam.example"])})
    assert status == 429 and "10000 recipients per day" in error["error"]["message"]
    assert float(headers["Retry-After"]) > 3600


async def test_a_lost_answer_still_sends(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"], SEND_SCOPES)
    await env.control("POST", "/sandbox/send-faults", {"lose_responses": 1})
    try:
        imid = f"<{uuid.uuid4().hex}@contoso.example>"
        status, _, _ = await env.graph("POST", "/me/sendMail", token,
                                       body={"message": message(["a@fabrikam.example"], imid)})
        assert status == 504
        assert len(await find(env, token, box["user_id"], imid)) == 1  # the send happened
    finally:
        await env.control("POST", "/sandbox/send-faults", {"reset": True})
