"""JSON batching against the sandbox: inner 429s are retried after their Retry-After, other step
errors come back per step."""

from __future__ import annotations

import pytest

from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.errors import GraphError, NotFound
from services.core.adapters.tls import client_session
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


async def test_batch_retries_throttled_steps_and_reports_each_step(stack: Stack):
    mailbox = await stack.new_mailbox(stack.new_account(), connect=False)
    token = (await stack.sandbox("POST", "/sandbox/tokens", {"user_id": mailbox.graph_id,
                                                             "scopes": ["Mail.Read", "User.Read"]}))["access_token"]
    user = mailbox.graph_id
    urls = [f"/users/{user}/mailFolders/{name}" for name in ("inbox", "sentitems", "drafts", "junkemail",
                                                             "deleteditems", "archive")]
    urls.append(f"/users/{user}/mailFolders/no-such-folder")  # a step that fails for good
    await stack.sandbox("POST", "/sandbox/faults", {"throttle": {"concurrent": 1}, "graph_latency_ms": 50})
    try:
        async with client_session(stack.ca_file) as session:
            graph = GraphClient(session, stack.env["MAILSYNC_GRAPH_URL"])
            results = await graph.batch_get(token, user, urls)
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
    assert all(isinstance(r, dict) and r.get("id") for r in results[:6]), results
    assert isinstance(results[6], GraphError) and not results[6].transient  # reported, not retried
    stats = (await stack.sandbox("GET", "/sandbox/stats"))["mailboxes"][user]
    assert stats["throttled"] > 0 and stats["early_retries"] == 0


async def test_batch_refuses_more_than_twenty(stack: Stack):
    async with client_session(stack.ca_file) as session:
        graph = GraphClient(session, stack.env["MAILSYNC_GRAPH_URL"])
        with pytest.raises(ValueError, match="20"):
            await graph.batch_get("t", "u", ["/me"] * 21)
    assert issubclass(NotFound, GraphError)
