"""The sandbox's control API and its command-line entry point."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.sandbox_support import Env, env, servers

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["env", "servers"]
ROOT = Path(__file__).resolve().parents[2]


async def test_faults_merge_reset_and_refuse_unknown_keys(env: Env):
    defaults = await env.control("GET", "/sandbox/faults")
    assert defaults["throttle"] == {"per_mailbox_per_10min": 10000, "concurrent": 4}
    assert defaults["access_token_lifetime_s"] == 4500 and defaults["notification_retry_base_ms"] == 60_000
    assert await env.control("POST", "/sandbox/faults", {}) == defaults
    merged = await env.control("POST", "/sandbox/faults", {"throttle": {"concurrent": 2},
                                                           "notification_drop_rate": 0.5})
    assert merged["throttle"] == {"per_mailbox_per_10min": 10000, "concurrent": 2}
    merged = await env.control("POST", "/sandbox/faults", {"notification_delay_ms": 10})
    assert merged["notification_drop_rate"] == 0.5 and merged["notification_delay_ms"] == 10
    for bad in ({"notification_drop_rate": 2}, {"no_such_fault": 1}, {"throttle": {"concurrent": 0}}):
        error = await env.control("POST", "/sandbox/faults", bad, expect=400)
        assert error["error"]["code"] == "bad_request" and error["error"]["message"]
    assert await env.control("POST", "/sandbox/faults", {"reset": True}) == defaults


async def test_control_errors_and_mailbox_upsert(env: Env):
    box = await env.mailbox()
    missing = await env.control("POST", "/sandbox/mailboxes/nobody/messages", {"from": "a@b.example"}, expect=404)
    assert missing["error"]["code"] == "not_found"
    await env.control("POST", f"/sandbox/mailboxes/{box['user_id']}/messages", {"from": "not an address"}, expect=400)
    await env.control("POST", f"/sandbox/mailboxes/{box['user_id']}/messages", {"received_at": "yesterday",
                                                                              "from": "a@b.example"}, expect=400)
    await env.control("POST", f"/sandbox/users/{box['user_id']}/revoke", {"reason": "bored"}, expect=400)
    await env.control("POST", "/sandbox/lifecycle", {"subscription_id": "x", "event": "missed"}, expect=404)
    async with env.http.post(f"{env.url}/sandbox/mailboxes", data=b"{not json") as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_request"
    clash = {"user_id": "someone-else", "address": box["address"]}
    await env.control("POST", "/sandbox/mailboxes", clash, expect=400)
    again = await env.control("POST", "/sandbox/mailboxes", {**box, "display_name": "Renamed"}, expect=200)
    assert again["display_name"] == "Renamed"
    created = await env.control("POST", f"/sandbox/mailboxes/{box['user_id']}/messages",
                                {"from": {"name": "A", "address": "a@b.example"}, "to": "c@d.example"}, expect=201)
    assert created["internet_message_id"].endswith("@sandbox.local>") and created["folder"] == "Inbox"


async def test_stats_shape(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    await env.graph("GET", "/me/messages", token)
    stats = await env.stats()
    assert set(stats) == {"mailboxes", "notifications", "lifecycle", "endpoints", "token_endpoint"}
    assert {"requests", "throttled", "max_concurrent", "early_retries", "notifications"} <= set(
        stats["mailboxes"][box["user_id"]])
    assert {"sent", "retried", "dropped", "failed", "pending", "in_flight"} <= set(stats["notifications"])


async def test_main_prints_its_address_and_stops_cleanly_on_sigterm(env: Env):
    code = "from mailsync_sandbox import main; raise SystemExit(main(['--host', '127.0.0.1', '--port', '0']))"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT, stdout=subprocess.PIPE,
                                                stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=20)).decode().strip()
        assert line.startswith("sandbox listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        async with env.http.get(f"{url}/sandbox/healthz") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
