"""The sandbox's Graph surface over real HTTP: users, messages, folders, delta, $batch, throttling."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from mailsync_sandbox.throttle import IN_FLIGHT_GRACE_S
from tests.integration.sandbox_support import Env, env, servers

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["env", "servers"]


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_user_profile_and_proxy_addresses(env: Env):
    box = await env.mailbox(aliases=("alias@contoso.example",))
    token = await env.token(box["user_id"])
    status, me, _ = await env.graph("GET", "/me?$select=id,mail,userPrincipalName,proxyAddresses", token)
    assert status == 200
    assert {k: v for k, v in me.items() if k != "@odata.context"} == {
        "id": box["user_id"], "mail": box["address"], "userPrincipalName": box["address"],
        "proxyAddresses": [f"SMTP:{box['address']}", "smtp:alias@contoso.example"]}
    status, same, _ = await env.graph("GET", f"/users/{box['address'].upper()}", token)
    assert status == 200 and same["id"] == box["user_id"] and "proxyAddresses" not in same
    status, error, _ = await env.graph("GET", "/me?$select=id,nonsense", token)
    assert status == 400 and "nonsense" in error["error"]["message"]


async def test_message_fields_and_select(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    message_id = await env.deliver(
        box["user_id"], **{"from": "Jane Doe <Jane.Doe@ACME.example>", "to": [box["address"]],
                           "cc": [{"name": "Raj", "address": "raj@acme.example"}], "subject": "Renewal",
                           "body": "Hello there", "received_at": "2026-01-02T03:04:05Z",
                           "internet_message_id": "<abc@acme.example>",
                           "headers": {"Auto-Submitted": "no"}})
    path = f"/users/{box['user_id']}/messages/{quote(message_id, safe='')}"
    status, full, headers = await env.graph("GET", path, token)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert full["id"] == message_id and full["@odata.etag"].startswith('W/"')
    assert full["from"] == {"emailAddress": {"name": "Jane Doe", "address": "Jane.Doe@ACME.example"}}
    assert full["sender"] == full["from"]
    assert full["toRecipients"] == [{"emailAddress": {"name": box["address"], "address": box["address"]}}]
    assert full["ccRecipients"] == [{"emailAddress": {"name": "Raj", "address": "raj@acme.example"}}]
    assert full["bccRecipients"] == [] and full["replyTo"] == []
    assert full["receivedDateTime"] == "2026-01-02T03:04:05Z" and full["isDraft"] is False
    assert full["body"] == {"contentType": "text", "content": "Hello there"} and full["bodyPreview"] == "Hello there"
    assert full["internetMessageId"] == "<abc@acme.example>" and full["conversationId"]
    assert "internetMessageHeaders" not in full

    status, picked, _ = await env.graph("GET", f"{path}?$select=subject,internetMessageHeaders,parentFolderId",
                                        token)
    assert status == 200
    assert set(picked) == {"@odata.context", "@odata.etag", "id", "subject", "internetMessageHeaders",
                           "parentFolderId"}
    names = {h["name"]: h["value"] for h in picked["internetMessageHeaders"]}
    assert names["Message-ID"] == "<abc@acme.example>" and names["Auto-Submitted"] == "no"
    status, inbox, _ = await env.graph("GET", "/me/mailFolders/inbox", token)
    assert picked["parentFolderId"] == inbox["id"]
    assert (await env.graph("GET", f"/me/messages/{quote(message_id, safe='')}", token))[0] == 200


async def test_sent_and_draft_messages(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    sent = await env.deliver(box["user_id"], folder="sentitems", to=["client@fabrikam.example"], **{"from": None})
    draft = await env.deliver(box["user_id"], folder="drafts", **{"from": None})
    status, body, _ = await env.graph("GET", f"/me/messages/{quote(sent, safe='')}?$select=from,isDraft", token)
    assert body["from"]["emailAddress"]["address"] == box["address"] and body["isDraft"] is False
    status, body, _ = await env.graph("GET", f"/me/messages/{quote(draft, safe='')}?$select=isDraft", token)
    assert status == 200 and body["isDraft"] is True


async def test_access_rules_and_missing_messages(env: Env):
    box, other = await env.mailbox(), await env.mailbox()
    token = await env.token(box["user_id"])
    mine = await env.deliver(box["user_id"])
    theirs = await env.deliver(other["user_id"])
    status, body, _ = await env.graph("GET", f"/users/{other['user_id']}/messages/{quote(theirs, safe='')}", token)
    assert status == 403 and body["error"]["code"] == "ErrorAccessDenied"
    status, body, _ = await env.graph("GET", f"/users/{other['user_id']}", token)
    assert status == 403 and body["error"]["code"] == "Authorization_RequestDenied"
    status, body, _ = await env.graph("GET", f"/me/messages/{quote(theirs, safe='')}", token)
    assert status == 404 and body["error"]["code"] == "ErrorItemNotFound"
    await env.control("DELETE", f"/sandbox/mailboxes/{box['user_id']}/messages/{mine}", expect=204)
    status, body, _ = await env.graph("GET", f"/me/messages/{quote(mine, safe='')}", token)
    assert status == 404 and body["error"]["code"] == "ErrorItemNotFound"
    status, body, _ = await env.graph("GET", "/me/messages/not-an-id", token)
    assert status == 400 and body["error"]["code"] == "ErrorInvalidIdMalformed"
    user_only = await env.token(box["user_id"], ["User.Read"])
    status, body, _ = await env.graph("GET", "/me/messages", user_only)
    assert status == 403 and body["error"]["code"] == "ErrorAccessDenied"


async def test_folders_nested_user_folders_and_paging(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    filed = await env.deliver(box["user_id"], folder="Clients/Acme")
    url: str | None = "/me/mailFolders?$top=4&$select=id,displayName,childFolderCount"
    folders = []
    while url:
        status, page, _ = await env.graph("GET", url, token)
        assert status == 200 and len(page["value"]) <= 4
        folders.extend(page["value"])
        url = page.get("@odata.nextLink")
    names = {f["displayName"]: f for f in folders}
    expected = {"Inbox", "Sent Items", "Drafts", "Deleted Items", "Junk Email", "Outbox", "Archive", "Clients"}
    assert expected <= set(names)
    assert names["Clients"]["childFolderCount"] == 1
    status, children, _ = await env.graph("GET", f"/me/mailFolders/{quote(names['Clients']['id'], safe='')}"
                                                 "/childFolders", token)
    acme = children["value"][0]
    assert acme["displayName"] == "Acme" and acme["parentFolderId"] == names["Clients"]["id"]
    assert acme["totalItemCount"] == 1
    status, message, _ = await env.graph("GET", f"/me/messages/{quote(filed, safe='')}?$select=parentFolderId",
                                         token)
    assert message["parentFolderId"] == acme["id"]
    status, inbox, _ = await env.graph("GET", "/me/mailFolders('Inbox')", token)
    assert status == 200 and inbox["displayName"] == "Inbox"
    status, body, _ = await env.graph("GET", "/me/mailFolders/clutter", token)
    assert status == 404 and body["error"]["code"] == "ErrorFolderNotFound"


async def test_list_with_filter_and_next_links(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    for days in (10, 6, 5, 4, 3, 1):
        await env.deliver(box["user_id"], subject=f"d{days}", received_at=ago(days=days),
                          folder="inbox" if days % 2 else "Clients")
    url: str | None = (f"/users/{box['user_id']}/messages?$select=subject,receivedDateTime&$top=2"
                       f"&$filter=receivedDateTime ge {ago(days=7)} and receivedDateTime lt {ago(days=2)}")
    subjects = []
    while url:
        status, page, _ = await env.graph("GET", url, token)
        assert status == 200, page
        subjects.extend(m["subject"] for m in page["value"])
        url = page.get("@odata.nextLink")
    assert subjects == ["d3", "d4", "d5", "d6"]  # newest first, across folders


async def test_delta_pages_changes_removals_and_expiry(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    ids = [await env.deliver(box["user_id"], subject=f"m{i}", received_at=ago(hours=i)) for i in range(5)]
    await env.deliver(box["user_id"], subject="old", received_at=ago(days=30))
    prefer = {"Prefer": 'odata.maxpagesize=2, IdType="ImmutableId"'}
    url: str | None = f"/me/mailFolders/inbox/messages/delta?$select=subject&$filter=receivedDateTime ge {ago(days=7)}"
    seen, pages, delta_link = [], 0, None
    while url:
        status, page, headers = await env.graph("GET", url, token, headers=prefer)
        assert status == 200, page
        assert headers["Preference-Applied"] == "odata.maxpagesize=2" and len(page["value"]) <= 2
        pages += 1
        seen.extend(page["value"])
        url, delta_link = page.get("@odata.nextLink"), page.get("@odata.deltaLink", delta_link)
    assert pages == 3 and [m["id"] for m in seen] == ids and {"subject", "id"} <= set(seen[0])
    assert delta_link and delta_link.startswith(env.url + "/v1.0/") and "$deltatoken=" in delta_link

    status, page, _ = await env.graph("GET", delta_link, token)
    assert status == 200 and page["value"] == []
    delta_link = page["@odata.deltaLink"]
    new = await env.deliver(box["user_id"], subject="new")
    await env.control("POST", f"/sandbox/mailboxes/{box['user_id']}/messages/{ids[0]}/move", {"folder": "archive"})
    await env.control("DELETE", f"/sandbox/mailboxes/{box['user_id']}/messages/{ids[1]}", expect=204)
    await env.control("PATCH", f"/sandbox/mailboxes/{box['user_id']}/messages/{ids[2]}", {"is_read": True})
    status, page, _ = await env.graph("GET", delta_link, token)
    assert status == 200
    removed = {m["id"] for m in page["value"] if "@removed" in m}
    changed = {m["id"] for m in page["value"] if "@removed" not in m}
    assert removed == {ids[0], ids[1]} and changed == {new, ids[2]}
    assert all(m["@removed"] == {"reason": "deleted"} for m in page["value"] if "@removed" in m)
    next_delta = page["@odata.deltaLink"]

    status, first, _ = await env.graph("GET", "/me/mailFolders/inbox/messages/delta?$select=id", token,
                                       headers={"Prefer": "odata.maxpagesize=1"})
    await env.control("POST", "/sandbox/faults", {"expire_delta_tokens": True})
    status, gone, headers = await env.graph("GET", next_delta, token)
    assert status == 410 and headers["Location"].startswith(env.url + "/v1.0/") and gone["error"]["code"]
    status, page, _ = await env.graph("GET", headers["Location"], token)
    assert status == 200 and "@odata.deltaLink" in page
    status, lost, _ = await env.graph("GET", first["@odata.nextLink"], token)
    assert status == 400 and lost["error"]["code"] == "BadRequest"
    assert lost["error"]["innerError"]["code"] == "syncStateNotFound"  # Graph nests the specific code


async def test_batch_steps_are_throttled_one_by_one(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    await env.control("POST", "/sandbox/faults", {"throttle": {"per_mailbox_per_10min": 3}})
    steps = [{"id": str(i), "method": "GET", "url": "/me/messages?$select=id"} for i in range(5)]
    status, body, _ = await env.graph("POST", "/$batch", token, body={"requests": steps})
    assert status == 200
    answers = {r["id"]: r for r in body["responses"]}
    assert sorted(r["status"] for r in answers.values()) == [200, 200, 200, 429, 429]
    throttled = [r for r in answers.values() if r["status"] == 429]
    assert all(float(r["headers"]["Retry-After"]) > 0 for r in throttled)
    assert all(r["body"]["error"]["code"] == "ApplicationThrottled" for r in throttled)
    too_many = [{"id": str(i), "method": "GET", "url": "/me"} for i in range(21)]
    status, body, _ = await env.graph("POST", "/$batch", token, body={"requests": too_many})
    assert status == 400


async def test_batch_runs_at_most_four_steps_of_a_mailbox_at_a_time(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    await env.control("POST", "/sandbox/faults", {"graph_latency_ms": 60, "throttle": {"concurrent": 10}})
    steps = [{"id": str(i), "method": "GET", "url": f"/users/{box['user_id']}/mailFolders/inbox"} for i in range(9)]
    steps.append({"id": "last", "method": "GET", "url": "/me", "dependsOn": ["0"]})
    status, body, _ = await env.graph("POST", "/$batch", token, body={"requests": steps})
    assert status == 200 and all(r["status"] == 200 for r in body["responses"])
    stats = await env.stats()
    assert stats["mailboxes"][box["user_id"]]["max_concurrent"] == 4


async def test_throttling_answers_429_with_retry_after_and_counts_early_retries(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    await env.control("POST", "/sandbox/faults", {"throttle": {"per_mailbox_per_10min": 2}})
    assert (await env.graph("GET", "/me/mailFolders/inbox", token))[0] == 200
    assert (await env.graph("GET", "/me/mailFolders/inbox", token))[0] == 200
    status, body, headers = await env.graph("GET", "/me/mailFolders/inbox", token)
    assert status == 429 and body["error"]["code"] == "ApplicationThrottled"
    assert 590 <= float(headers["Retry-After"]) <= 600
    # A request already on the wire when the 429 went out is not early; one sent after it is.
    await asyncio.sleep(IN_FLIGHT_GRACE_S * 2)
    assert (await env.graph("GET", "/me/mailFolders/inbox", token))[0] == 429  # too early: counts, still throttled
    counts = (await env.stats())["mailboxes"][box["user_id"]]
    assert counts["requests"] == 4 and counts["throttled"] == 2 and counts["early_retries"] == 1

    other = await env.mailbox()  # one mailbox being throttled does not affect another
    assert (await env.graph("GET", "/me", await env.token(other["user_id"])))[0] == 200


async def test_concurrency_limit_answers_fractional_retry_after(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    await env.control("POST", "/sandbox/faults", {"graph_latency_ms": 300, "throttle": {"concurrent": 1}})
    results = await asyncio.gather(*(env.graph("GET", "/me/messages", token) for _ in range(2)))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 429]
    throttled = next(r for r in results if r[0] == 429)
    assert "MailboxConcurrency" in throttled[1]["error"]["message"] and throttled[2]["Retry-After"] == "0.5"
