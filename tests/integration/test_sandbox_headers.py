"""The sandbox's `internetMessageHeaders`: what a message was delivered with (`"headers"`), returned only when
`$select`ed (docs/graph.md#messages), in single GETs and in lists, names as delivered."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.integration.sandbox_support import Env, env, servers

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["env", "servers"]


async def test_delivered_headers_come_back_only_when_selected(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    message_id = await env.deliver(box["user_id"], to=[box["address"]], headers={
        "List-Unsubscribe": "<mailto:leave@news.example>", "list-id": "News <news.example>",
        "Precedence": "bulk"})
    listed_id = await env.deliver(box["user_id"], to=[box["address"]],
                                  headers=[{"name": "Auto-Submitted", "value": "auto-generated"}])
    path = f"/users/{box['user_id']}/messages/{quote(message_id, safe='')}"

    status, plain, _ = await env.graph("GET", path, token)
    assert status == 200 and "internetMessageHeaders" not in plain
    status, picked, _ = await env.graph("GET", f"{path}?$select=id,internetMessageHeaders", token)
    assert status == 200
    pairs = [(h["name"], h["value"]) for h in picked["internetMessageHeaders"]]
    assert ("List-Unsubscribe", "<mailto:leave@news.example>") in pairs
    assert ("list-id", "News <news.example>") in pairs  # the name as delivered: readers compare case-insensitively
    assert ("Precedence", "bulk") in pairs and any(n == "Message-ID" for n, _ in pairs)

    status, page, _ = await env.graph("GET", f"/users/{box['user_id']}/messages?$top=10", token)
    assert status == 200 and all("internetMessageHeaders" not in m for m in page["value"])
    status, page, _ = await env.graph("GET", f"/users/{box['user_id']}/messages?$select=internetMessageHeaders",
                                      token)
    assert status == 200
    by_id = {m["id"]: {h["name"]: h["value"] for h in m["internetMessageHeaders"]} for m in page["value"]}
    assert by_id[listed_id]["Auto-Submitted"] == "auto-generated"


async def test_headers_must_be_names_and_values(env: Env):
    box = await env.mailbox()
    for bad in ({"List-Id": 3}, [{"name": "List-Id"}], "List-Id: x"):
        body = await env.control("POST", f"/sandbox/mailboxes/{box['user_id']}/messages",
                                 {"from": "a@b.example", "headers": bad}, expect=400)
        assert "headers" in body["error"]["message"]
