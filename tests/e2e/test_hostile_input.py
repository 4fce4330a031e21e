"""Hostile input at the webhook edge: never a 5xx while Kafka is up, never a record for an untrusted
notification, oversized bodies refused with 413 (issue: proof under faults)."""

from __future__ import annotations

import http.client
import json
import os
import uuid
from urllib.parse import quote, urlsplit

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.kafka_tail import partition_count
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e]

CASES = int(os.environ.get("MAILSYNC_FUZZ_CASES", "10000"))
MARK = "fuzz-" + uuid.uuid4().hex[:8]

text = st.text(max_size=40)
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
json_values = st.recursive(scalar, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
                           max_leaves=12)


def notification(subscription_id: st.SearchStrategy[str], client_state: st.SearchStrategy[str],
                 tenant: st.SearchStrategy[str]) -> st.SearchStrategy[dict]:
    message_id = st.builds(lambda s: f"{MARK}-{s}", st.text(alphabet="abcdef0123456789", min_size=1, max_size=8))
    return st.fixed_dictionaries({
        "subscriptionId": subscription_id, "clientState": client_state, "tenantId": tenant,
        "changeType": st.sampled_from(["created", "updated", "deleted", "exploded", ""]),
        "resource": st.builds(lambda m: f"Users/u/Messages/{m}", message_id),
        "resourceData": st.one_of(json_values, st.fixed_dictionaries({"id": message_id})),
    }, optional={"extra": json_values})


class Edge:
    """One keep-alive HTTP/1.1 connection to the subscriber (fast enough for 10,000 cases)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> int:
        try:
            self.conn.request("POST", path, body=body, headers={"Content-Type": content_type})
            resp = self.conn.getresponse()
            resp.read()
            return resp.status
        except (http.client.HTTPException, OSError):
            self.conn.close()
            raise


@pytest.fixture(scope="module")
def edge(stack_processes: Stack) -> Edge:
    return Edge(stack_processes.api_url)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def known_subscription(stack: Stack) -> dict:
    """A real subscription's id and tenant: fuzz cases use them with the wrong clientState."""
    mailbox = await stack.new_mailbox(stack.new_account())
    subs = await stack.sandbox("GET", "/sandbox/subscriptions")
    items = subs["value"] if isinstance(subs, dict) else subs
    return next(s for s in items if mailbox.graph_id in s["resource"])


def test_fuzzed_notifications_never_5xx_and_never_publish(stack_processes: Stack, edge: Edge,
                                                          known_subscription: dict):
    statuses: dict[int, int] = {}
    sub_ids = st.one_of(st.just(known_subscription["id"]), st.uuids().map(str), text)
    wrong_states = st.one_of(text, st.just(known_subscription["clientState"] + "x"), st.just(""))
    tenants = st.one_of(st.just(known_subscription.get("tenantId", "")), st.uuids().map(str), text)
    bodies = st.one_of(
        st.builds(lambda items: {"value": items}, st.lists(notification(sub_ids, wrong_states, tenants), max_size=5)),
        json_values.map(lambda v: {"value": v}),
        json_values,
    )

    @settings(max_examples=CASES, deadline=None, derandomize=False, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=bodies, raw=st.one_of(st.none(), st.binary(max_size=64)), lifecycle=st.booleans(),
           token=st.one_of(st.none(), st.text(max_size=30)))
    def case(body, raw, lifecycle, token):
        path = "/graph/lifecycle" if lifecycle else "/graph/notifications"
        if token is not None:
            path += "?validationToken=" + quote(token, safe="")
        payload = raw if raw is not None else json.dumps(body).encode()
        status = edge.post(path, payload)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, path, payload[:200])
        if token is not None:
            assert status == 200

    case()
    assert sum(statuses.values()) >= CASES
    assert statuses.get(400, 0) > 0 and statuses.get(202, 0) > 0  # both kinds of answer were exercised


def test_oversized_body_is_413(edge: Edge):
    assert edge.post("/graph/notifications", b'{"value": [' + b" " * (2 * 1024 * 1024) + b"]}") == 413


@pytest.mark.asyncio(loop_scope="session")
async def test_no_fuzzed_notification_reached_kafka(stack: Stack, known_subscription: dict):
    """Runs after the fuzzing: scans the whole notifications topic for the fuzz marker. A genuine
    notification sent last is the positive control: it must be there."""
    control = f"control-{uuid.uuid4().hex}"
    body = {"value": [{"subscriptionId": known_subscription["id"], "clientState": known_subscription["clientState"],
                       "tenantId": known_subscription.get("tenantId", ""), "changeType": "created",
                       "resource": f"Users/u/Messages/{control}", "resourceData": {"id": control}}]}
    async with stack.http.post(f"{stack.api_url}/graph/notifications", json=body) as resp:
        assert resp.status == 202
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.env["MAILSYNC_KAFKA_BOOTSTRAP"],
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        topic = "mailsync.notifications.v1"
        tps = [TopicPartition(topic, p) for p in range(partition_count(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        seen = 0
        async def behind() -> bool:
            return any([await consumer.position(tp) < offset for tp, offset in end.items()])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    seen += control.encode() in (record.value or b"")
                    assert MARK.encode() not in (record.value or b""), "an untrusted notification was published"
        assert seen == 1
    finally:
        await consumer.stop()
