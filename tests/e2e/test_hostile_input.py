"""Hostile input at the webhook edge, mixed with genuine notifications.

Generated bodies go to `/graph/notifications` and `/graph/lifecycle`: notifications Graph really would
send (the right subscriptionId, clientState and tenant of a connected mailbox, for messages that exist
in the sandbox) mixed into the same bodies as forged ones (wrong clientState, unknown subscription,
another tenant), forged lifecycle notifications, malformed bodies, deep nesting, bodies around the 1 MiB
limit, and odd Unicode (lone surrogates escaped in JSON, NUL, RTL marks, non-BMP characters).

Afterwards, read from the topics themselves: every genuine notification answered 202 is on
mailsync.notifications.v1 (counted per message and change type), no forged one is there or on
mailsync.lifecycle.v1, a genuine lifecycle notification is (the positive control), the webhook never
answered 5xx, and the matcher still turns new mail into an engagement."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.kafka_tail import Tail, read_topic
from tests.support.stack import Mailbox, Stack, client

pytestmark = [pytest.mark.e2e]

CASES = int(os.environ.get("MAILSYNC_FUZZ_CASES", "3000"))
MARK = "fuzz-" + uuid.uuid4().hex[:8]  # in every forged notification's message or subscription id
LIMIT = 1024 * 1024  # the webhook's body limit
CONTACT = "webhook-fuzz@client.example"

ODD = ["\u202e", "\u200f", "\u200b", "\ufeff", "\U0001f600", "\U00010348", "\u0301", "\uffff", "ß", "İ"]
odd_text = st.text(alphabet=st.one_of(st.sampled_from(ODD), st.characters(blacklist_categories=("Cs",),
                                                                         blacklist_characters="\x00")),
                   min_size=1, max_size=40)
text = st.text(max_size=40)
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
json_values = st.recursive(scalar, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
                           max_leaves=12)
marked_id = st.builds(lambda s: f"{MARK}-{s}", odd_text)


@dataclass
class Target:
    """A connected mailbox, its live subscription, and messages that exist in its sandbox mailbox."""

    mailbox: Mailbox
    subscription_id: str
    client_state: str
    tenant_id: str
    message_ids: list[str]


@dataclass
class Ledger:
    statuses: Counter[int] = field(default_factory=Counter)
    trusted: Counter[tuple[str, str]] = field(default_factory=Counter)  # (message id, change type) answered 202
    forged_change: int = 0
    forged_lifecycle: int = 0
    hostile: Counter[str] = field(default_factory=Counter)  # corpus kind → cases


class Edge:
    """One keep-alive HTTP/1.1 connection to the subscriber (fast enough for thousands of cases)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> int:
        try:
            # The server may answer (413) before reading the whole body: its answer is still there.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.conn.request("POST", path, body=body, headers={"Content-Type": content_type})
            resp = self.conn.getresponse()
            resp.read()
            if resp.will_close:
                self.conn.close()
            return resp.status
        except (http.client.HTTPException, OSError):
            self.conn.close()
            raise


async def _target(stack: Stack, account: str, messages: int) -> Target:
    mailbox = await stack.new_mailbox(account)
    subs = await stack.sandbox("GET", "/sandbox/subscriptions")
    items = subs["value"] if isinstance(subs, dict) else subs
    sub = next(s for s in items if mailbox.graph_id in s["resource"])
    ids = []
    for i in range(messages):
        created = await stack.sandbox("POST", f"/sandbox/mailboxes/{mailbox.graph_id}/messages", {
            "from": "someone@elsewhere.example", "to": [mailbox.address], "subject": f"exists {i}", "body": "b",
            "folder": "inbox", "internet_message_id": f"<{uuid.uuid4()}@fuzz.example>"})
        ids.append(created["id"])
    return Target(mailbox, sub["id"], sub["clientState"], sub.get("tenantId") or mailbox.tenant_id, ids)


@pytest_asyncio.fixture(scope="module")
async def targets(stack: Stack) -> tuple[Target, Target]:
    """The change-notification target (its account knows CONTACT) and a separate lifecycle target."""
    account = stack.new_account()
    contact = await stack.add_contact(account, CONTACT)
    await stack.wait_contact(contact)
    return await _target(stack, account, 4), await _target(stack, stack.new_account(), 0)


def forged_items(t: Target) -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed change notifications that must not be trusted; the message id carries MARK."""
    wrong_state = odd_text.filter(lambda s: s != t.client_state)
    other_tenant = st.uuids().map(str).filter(lambda s: s != t.tenant_id)
    who = st.one_of(
        st.fixed_dictionaries({"subscriptionId": st.just(t.subscription_id), "clientState": wrong_state,
                               "tenantId": st.just(t.tenant_id)}),
        st.fixed_dictionaries({"subscriptionId": st.just(t.subscription_id), "clientState": st.just(t.client_state),
                               "tenantId": other_tenant}),
        st.fixed_dictionaries({"subscriptionId": marked_id, "clientState": st.just(t.client_state),
                               "tenantId": st.just(t.tenant_id)}),
        st.fixed_dictionaries({"subscriptionId": st.one_of(st.uuids().map(str), marked_id), "clientState": odd_text,
                               "tenantId": st.one_of(st.just(t.tenant_id), other_tenant)}),
    )
    return st.builds(lambda w, change, mid: {**w, "changeType": change, "resource": f"Users/x/Messages/{mid}",
                                             "resourceData": {"id": mid}},
                     who, st.sampled_from(["created", "updated", "deleted"]), marked_id)


def trusted_items(t: Target) -> st.SearchStrategy[dict[str, Any]]:
    """What Graph itself sends for t's subscription; etags are unique and may hold odd Unicode."""
    return st.builds(lambda mid, change, etag: {
        "subscriptionId": t.subscription_id, "clientState": t.client_state, "tenantId": t.tenant_id,
        "changeType": change, "resource": f"Users/{t.mailbox.graph_id}/Messages/{mid}",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": mid,
                         "@odata.etag": f"W/\"{uuid.uuid4().hex}{etag}\""}},
        st.sampled_from(t.message_ids), st.sampled_from(["updated", "deleted"]), st.sampled_from(["", *ODD]))


def forged_lifecycle(t: Target) -> st.SearchStrategy[dict[str, Any]]:
    event = st.sampled_from(["reauthorizationRequired", "subscriptionRemoved", "missed"])
    who = st.one_of(
        st.fixed_dictionaries({"subscriptionId": st.just(t.subscription_id),
                               "clientState": odd_text.filter(lambda s: s != t.client_state),
                               "tenantId": st.just(t.tenant_id)}),
        st.fixed_dictionaries({"subscriptionId": st.just(t.subscription_id), "clientState": st.just(t.client_state),
                               "tenantId": st.uuids().map(str)}),
        st.fixed_dictionaries({"subscriptionId": marked_id, "clientState": st.just(t.client_state),
                               "tenantId": st.just(t.tenant_id)}),
    )
    return st.builds(lambda w, e: {**w, "lifecycleEvent": e,
                                   "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z"}, who, event)


def malformed_item(t: Target) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "subscriptionId": st.one_of(st.just(t.subscription_id), st.uuids().map(str), text),
        "clientState": st.one_of(text, st.just(t.client_state + "x"), st.just("")),
        "tenantId": st.one_of(st.just(t.tenant_id), st.uuids().map(str), text),
        "changeType": st.sampled_from(["created", "updated", "deleted", "exploded", ""]),
        "resource": st.builds(lambda m: f"Users/u/Messages/{m}", marked_id),
        "resourceData": st.one_of(json_values, st.fixed_dictionaries({"id": marked_id})),
        "lifecycleEvent": st.one_of(text, st.sampled_from(["missed", "subscriptionRemoved"])),
    }, optional={"extra": json_values})


def hostile_corpus(t: Target) -> list[tuple[str, str, bytes, set[int]]]:
    """(kind, path, body, acceptable statuses): the inputs a generator of small values never reaches."""
    item = {"subscriptionId": t.subscription_id, "clientState": "forged", "tenantId": t.tenant_id,
            "changeType": "created", "resource": f"Users/x/Messages/{MARK}-c", "resourceData": {"id": f"{MARK}-c"}}
    four = set(range(400, 500))
    out: list[tuple[str, str, bytes, set[int]]] = []
    for path in ("/graph/notifications", "/graph/lifecycle"):
        out += [
            ("deep-list", path, b"[" * 5000 + b"]" * 5000, four),
            ("deep-value", path, b'{"value": ' + b"[" * 5000 + b"]" * 5000 + b"}", four),
            ("deep-object", path, b'{"a":' * 5000 + b"1" + b"}" * 5000, four),
            ("deep-200k", path, b"[" * 200_000 + b"]" * 200_000, four),
            ("deep-unclosed", path, b"[" * 900_000, four),
            ("huge-number", path, b'{"value": 1' + b"0" * 100_000 + b"}", four),
            ("invalid-utf8", path, b'{"value": ["\xff\xfe\xc0"]}', four),
            ("bom", path, b"\xef\xbb\xbf" + json.dumps({"value": [item]}).encode(), four | {202}),
            ("raw-nul", path, b'{"value": [{"subscriptionId": "a\x00b"}]}', four),
        ]
        for size in (LIMIT - 4096, LIMIT - 1, LIMIT, LIMIT + 1, LIMIT + 4096, 4 * LIMIT):
            # One huge string, padded so the whole body is `size` bytes.
            head = json.dumps({"value": [{**item, "clientState": ""}]}).encode()
            pad = max(0, size - len(head))
            body = head.replace(b'"clientState": ""', b'"clientState": "' + b"x" * pad + b'"')
            out.append((f"huge-{size - LIMIT:+d}", path, body, {400, 413}))
        many = json.dumps({"value": [item] * 1001}).encode()
        out.append(("1001-items", path, many, four))
    escaped = [  # JSON escapes the server decodes into odd strings
        ("lone-high-surrogate", '"\\ud800"'), ("lone-low-surrogate", '"\\udfff"'),
        ("reversed-pair", '"\\udc00\\ud800"'), ("escaped-nul", '"a\\u0000b"'), ("rtl", '"\\u202eevil"'),
        ("non-bmp", '"\\ud83d\\ude00"'), ("noncharacter", '"\\uffff"'),
    ]
    odd = "@@ODD@@"
    shapes = {  # where the odd string goes; every shape is untrusted whatever the string decodes to
        "subscriptionId": {**item, "subscriptionId": odd},
        "clientState": {**item, "clientState": odd},  # the real subscription, a clientState nobody has
        "tenantId": {**item, "clientState": t.client_state, "tenantId": odd},  # right secret, odd tenant
        "changeType": {**item, "changeType": odd},
        "message-id": {**item, "resourceData": {"id": odd}},
        "key": {**item, odd: "x"},
    }
    life = {"subscriptionId": t.subscription_id, "clientState": odd, "tenantId": t.tenant_id,
            "lifecycleEvent": "subscriptionRemoved"}
    for kind, lit in escaped:
        for where, shape in shapes.items():
            raw = json.dumps({"value": [shape]}).replace(f'"{odd}"', lit[:-1] + (MARK if where == "message-id"
                                                                                 else "") + '"')
            out.append((f"{kind}-{where}", "/graph/notifications", raw.encode(), four | {202}))
        raw = json.dumps({"value": [life]}).replace(f'"{odd}"', lit)
        out.append((f"{kind}-lifecycle-clientState", "/graph/lifecycle", raw.encode(), four | {202}))
    return out


@pytest.fixture(scope="module")
def edge(stack_processes: Stack) -> Edge:
    return Edge(stack_processes.api_url)


def test_hostile_and_genuine_notifications(stack_processes: Stack, edge: Edge, targets: tuple[Target, Target]):
    target, life = targets
    ledger = Ledger()
    failures: list[str] = []
    for kind, path, body, allowed in hostile_corpus(target):
        status = edge.post(path, body)
        ledger.statuses[status] += 1
        ledger.hostile[kind] += 1
        if status not in allowed:
            failures.append(f"{kind} at {path}: {status} (allowed {sorted(allowed)[:3]}…)")

    change_body = st.lists(st.one_of(trusted_items(target), forged_items(target), forged_items(life)),
                           min_size=1, max_size=6)
    lifecycle_body = st.lists(st.one_of(forged_lifecycle(life), forged_lifecycle(target)), min_size=1, max_size=4)
    cases = st.one_of(
        change_body.map(lambda items: ("change", items)),
        lifecycle_body.map(lambda items: ("lifecycle", items)),
        st.tuples(st.just("malformed"), st.lists(malformed_item(target), max_size=4)),
        st.tuples(st.just("any"), st.one_of(json_values.map(lambda v: {"value": v}), json_values)),
        st.tuples(st.just("bytes"), st.binary(max_size=64)),
    )

    @settings(max_examples=CASES, deadline=None, derandomize=False, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases, lifecycle_path=st.booleans(), token=st.one_of(st.none(), st.none(), st.text(max_size=30)))
    def fuzz(case, lifecycle_path, token):
        kind, items = case
        if kind == "change":
            path, token = "/graph/notifications", None
        elif kind == "lifecycle":
            path, token = "/graph/lifecycle", None
        else:
            path = "/graph/lifecycle" if lifecycle_path else "/graph/notifications"
        if token is not None:
            path += "?validationToken=" + quote(token, safe="")
        if kind == "bytes":
            payload = items
        elif kind in ("change", "lifecycle", "malformed"):
            payload = json.dumps({"value": items}).encode()
        else:
            payload = json.dumps(items).encode()
        status = edge.post(path, payload)
        ledger.statuses[status] += 1
        assert status < 500, (status, path, payload[:300])
        if token is not None:
            assert status == 200  # the validation handshake, whatever the body
        elif kind in ("change", "lifecycle"):
            # Well-formed: accepted, forged items silently dropped, genuine ones stored.
            assert status == 202, (status, path, payload[:300])
            for item in items:
                if kind == "change" and item["clientState"] == target.client_state and \
                        item["subscriptionId"] == target.subscription_id and item["tenantId"] == target.tenant_id:
                    ledger.trusted[(item["resourceData"]["id"], item["changeType"])] += 1
                elif kind == "change":
                    ledger.forged_change += 1
                else:
                    ledger.forged_lifecycle += 1

    fuzz()
    assert sum(ledger.statuses.values()) >= CASES
    assert ledger.statuses[400] > 0 and ledger.statuses[202] > 0  # both kinds of answer were exercised
    assert sum(ledger.trusted.values()) > 0 and ledger.forged_change > 0 and ledger.forged_lifecycle > 0
    asyncio.run(_check_topics(stack_processes, edge, target, life, ledger))
    # Last, so a bad answer to one odd input does not hide what the rest proves.
    assert not failures, f"{len(failures)} hostile inputs answered badly: {failures[:12]}"


def _record(raw: bytes) -> dict[str, Any]:
    """A record of the topic as JSON; other tests' poison records (nesting deeper than json's recursion limit,
    bytes that are not JSON) are on the same topics and are nobody's genuine notification."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


async def _check_topics(stack: Stack, edge: Edge, target: Target, life: Target, ledger: Ledger) -> None:
    bootstrap = stack.env["MAILSYNC_KAFKA_BOOTSTRAP"]
    # Positive control for the lifecycle topic: one genuine lifecycle notification, sent last.
    control = {"subscriptionId": life.subscription_id, "clientState": life.client_state,
               "tenantId": life.tenant_id, "lifecycleEvent": "missed",
               "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z"}
    assert edge.post("/graph/lifecycle", json.dumps({"value": [control]}).encode()) == 202
    engagements = await Tail(bootstrap, "mailsync.engagements.v1").start()
    try:
        notifications = await read_topic(bootstrap, "mailsync.notifications.v1")
        lifecycle = await read_topic(bootstrap, "mailsync.lifecycle.v1")
        mark = MARK.encode()
        assert not [v for v in notifications if mark in v], "a forged change notification was published"
        assert not [v for v in lifecycle if mark in v], "a forged lifecycle notification was published"
        life_records = [_record(v) for v in lifecycle]
        mine = [v for v in life_records if v.get("subscription_id") in (life.subscription_id,
                                                                         target.subscription_id)]
        # Forged lifecycle notifications named both real subscriptions; what got through is the control plus
        # whatever Graph (the sandbox) itself sent for them, e.g. a spontaneous reauthorizationRequired as a
        # subscription's token nears expiry (counted by the sandbox, read after the topic).
        got = Counter((v["subscription_id"], v["lifecycle_event"]) for v in mine)
        async with client(stack.ca_file) as http:  # this loop's own client: the stack's is on the session's loop
            async with http.get(f"{stack.sandbox_url}/sandbox/stats") as resp:
                stats = await resp.json()
            allowed = Counter({(life.subscription_id, "missed"): 1})
            for t in (target, life):
                entry = stats["mailboxes"].get(t.mailbox.graph_id) or stats["mailboxes"].get(t.mailbox.address) or {}
                for event, n in entry.get("lifecycle", {}).items():
                    if event != "spontaneous":
                        allowed[(t.subscription_id, event)] += n
            assert got[(life.subscription_id, "missed")] >= 1, f"the genuine lifecycle notification is missing: {got}"
            assert not got - allowed, f"forged lifecycle notifications were published: {got - allowed}"
            published: Counter[tuple[str, str]] = Counter()
            for raw in notifications:
                value = _record(raw)
                if value.get("subscription_id") == target.subscription_id and value.get("source") == "webhook" and \
                        value.get("change_type") in ("updated", "deleted"):
                    assert value["connection_id"] == target.mailbox.connection_id
                    published[(value["message_id"], value["change_type"])] += 1
            # Every genuine notification answered 202 was stored, once: the sandbox itself only ever sends
            # `created` for these messages, so updated/deleted records come from the fuzz alone.
            assert published == ledger.trusted, (published, ledger.trusted)
            # The matcher went through the genuine notifications and still turns new mail into an engagement.
            imid = f"<{uuid.uuid4()}@after-the-fuzz.example>"
            message = {"from": CONTACT, "to": [target.mailbox.address], "subject": "after the fuzz", "body": "b",
                       "folder": "inbox", "internet_message_id": imid}
            async with http.post(f"{stack.sandbox_url}/sandbox/mailboxes/{target.mailbox.graph_id}/messages",
                                 json=message) as resp:
                assert resp.status == 201, await resp.text()
        await engagements.wait_for(type="engagement.created", internet_message_id=imid, timeout=120)
    finally:
        await engagements.stop()
    print(f"\nwebhook fuzz: statuses {dict(ledger.statuses)}; genuine notifications {sum(ledger.trusted.values())} "
          f"over {len(ledger.trusted)} (message, change) pairs, all on Kafka; forged change "
          f"{ledger.forged_change}, forged lifecycle {ledger.forged_lifecycle}, none on Kafka; "
          f"hostile corpus {sum(ledger.hostile.values())} bodies")


def test_oversized_body_is_413(edge: Edge):
    assert edge.post("/graph/notifications", b'{"value": [' + b" " * (2 * 1024 * 1024) + b"]}") == 413
