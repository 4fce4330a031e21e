"""Every service's /metrics moves when mail flows; health endpoints answer."""

from __future__ import annotations

import re

import pytest

from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


async def scrape(stack: Stack, service: str) -> dict[str, float]:
    async with stack.http.get(f"http://127.0.0.1:{stack.ports[service]}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) ([0-9.eE+-]+|NaN)$", line)
        if match and not line.startswith("#"):
            values[match.group(1)] = float(match.group(2))
    return values


def total(values: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for key, v in values.items()
               if key.split("{")[0] == name and all(w in key for w in wanted))


async def test_counters_move_when_mail_flows(stack: Stack, engagements_tail):
    before = {s: await scrape(stack, s) for s in ("subscriber", "matcher", "renewer")}
    account = stack.new_account()
    contact = await stack.add_contact(account, "metrics@client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    imid = await stack.deliver(mailbox, **{"from": "metrics@client.example"})
    await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid)
    after: dict[str, dict[str, float]] = {}

    def moved(service: str, name: str, **labels: str) -> bool:
        return total(after[service], name, **labels) > total(before[service], name, **labels)

    async def committed() -> bool:  # the offset commit (and its counter) follows the publish
        after.update({s: await scrape(stack, s) for s in ("subscriber", "matcher", "renewer")})
        return moved("matcher", "mailsync_records_total", topic="mailsync.notifications.v1", outcome="ok") and \
            total(after["renewer"], "mailsync_connections", status="connected") >= 1  # set every renewer tick

    await wait_until(committed, what="the matcher's record counter and the renewer's connection gauge")

    assert moved("subscriber", "mailsync_notifications_total", endpoint="notifications", outcome="published")
    assert moved("subscriber", "mailsync_webhook_seconds_count", endpoint="notifications")
    assert moved("subscriber", "mailsync_graph_requests_total")  # the subscription created at connect
    assert moved("matcher", "mailsync_engagements_created_total")
    assert moved("matcher", "mailsync_match_decisions_total", decision="matched")
    assert moved("matcher", "mailsync_graph_requests_total", status="200")
    assert moved("matcher", "mailsync_records_total", topic="mailsync.notifications.v1", outcome="ok")
    assert "mailsync_consumer_lag" in " ".join(after["matcher"])
    assert total(after["renewer"], "mailsync_connections", status="connected") >= 1
    assert "mailsync_subscriptions_expiring_soon" in after["renewer"]


@pytest.mark.parametrize("service", ["subscriber", "matcher", "renewer"])
async def test_health_and_readiness(stack: Stack, service: str):
    for path in ("/healthz", "/readyz"):
        async with stack.http.get(f"http://127.0.0.1:{stack.ports[service]}{path}") as resp:
            assert resp.status == 200, (service, path, await resp.text())
    async with stack.http.get(f"http://127.0.0.1:{stack.ports[service]}/readyz") as resp:
        assert (await resp.json())["checks"] == {"kafka": True, "postgresql": True}
