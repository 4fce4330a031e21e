"""Hostile crm.directory.v1 records: generated records (valid, malformed, wrong types, binary, ids owned
by other accounts) plus a corpus a small-value generator never reaches (5,000-deep nesting, strings near
the 1 MiB record limit, lone surrogates escaped in JSON, NUL, RTL marks, non-BMP characters, huge numbers)
and attempts to take over a victim account's user, contact and client.

The matcher keeps going: valid records published after all of it are applied (every one counted), every
record that must be refused is in the DLQ with a reason (found by its partition and offset), and nothing
leaked across accounts: the victim's directory is exactly what it was, and no address or domain row is
filed under another account than its owner's. Both leak checks have a positive control."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.domain import events
from tests.support.kafka_tail import Tail
from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

CASES = int(os.environ.get("MAILSYNC_FUZZ_CASES", "3000"))
RUN = uuid.uuid4().hex[:8]
ACCOUNTS = [f"fuzz-{RUN}-{i}" for i in range(3)]
VICTIM = f"victim-{RUN}"
V_CONTACT, V_USER, V_CLIENT = f"v-contact-{RUN}", f"v-user-{RUN}", f"v-client-{RUN}"
CONTACTS = [f"c{i}-{RUN}" for i in range(3)] + [V_CONTACT]
USERS = [f"u{i}-{RUN}" for i in range(2)] + [V_USER]
CLIENTS = [f"k1-{RUN}", V_CLIENT]
MARKERS = 12
RECORD_LIMIT = 1024 * 1024

text = st.text(max_size=30)
junk = st.one_of(st.none(), st.booleans(), st.integers(), text, st.lists(text, max_size=3))
emails = st.lists(st.one_of(st.emails().map(str), text), max_size=4)
record = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["contact.upserted", "contact.deleted"]),
                           "account_id": st.sampled_from(ACCOUNTS), "contact_id": st.sampled_from(CONTACTS),
                           "client_id": st.one_of(st.none(), st.sampled_from(CLIENTS), junk),
                           "emails": st.one_of(emails, junk)}),
    st.fixed_dictionaries({"type": st.sampled_from(["user.upserted", "user.deleted"]),
                           "account_id": st.sampled_from(ACCOUNTS), "user_id": st.sampled_from(USERS),
                           "email": st.one_of(st.emails().map(str), junk), "aliases": st.one_of(emails, junk)}),
    st.fixed_dictionaries({"type": st.just("client.upserted"), "account_id": st.sampled_from(ACCOUNTS),
                           "client_id": st.sampled_from(CLIENTS), "name": junk,
                           "domains": st.one_of(st.lists(st.one_of(st.sampled_from(["acme.example", "bad domain"]),
                                                                   text), max_size=3), junk)}),
    st.fixed_dictionaries({"type": st.just("blocklist.upserted"), "account_id": st.sampled_from(ACCOUNTS),
                           "entries": st.one_of(emails, junk)}),
    st.dictionaries(text, junk, max_size=4),
)
raw = st.one_of(record.map(lambda r: json.dumps(r).encode()), st.binary(max_size=40))


def _contact(account: str, contact_id: str, *addresses: str, client_id: str | None = None) -> dict[str, Any]:
    return {"type": "contact.upserted", "account_id": account, "contact_id": contact_id, "client_id": client_id,
            "emails": list(addresses)}


def hostile_corpus() -> list[tuple[str, str, bytes | None, bool]]:
    """(kind, key, value, must be refused to the DLQ)."""
    a = ACCOUNTS[0]
    out: list[tuple[str, str, bytes | None, bool]] = []

    def env(**fields: Any) -> str:
        return json.dumps({"type": "contact.upserted", "account_id": a, "contact_id": CONTACTS[0], "client_id": None,
                           "emails": ["x@fuzz.example"], **fields})

    deep = "[" * 5000 + "]" * 5000
    out += [
        ("no-value", a, None, True),
        ("deep-list", a, deep.encode(), True),
        ("deep-object", a, ('{"a":' * 5000 + "1" + "}" * 5000).encode(), True),
        ("deep-in-emails", a, env(emails="@@").replace('"@@"', deep).encode(), True),
        ("deep-200k", a, ("[" * 200_000 + "]" * 200_000).encode(), True),
        ("deep-unclosed", a, ("{" * 900_000).encode(), True),
        ("huge-number", a, env(n=0).replace('"n": 0', '"n": 1' + "0" * 100_000).encode(), True),
        ("invalid-utf8", a, b'{"type": "contact.upserted", "account_id": "\xff\xfe"}', True),
        ("bom", a, b"\xef\xbb\xbf" + env().encode(), False),
        ("raw-nul", a, env(contact_id="a\x00b").replace("\\u0000", "\x00").encode(), True),
    ]
    for size in (RECORD_LIMIT - 200_000, RECORD_LIMIT - 60_000):  # the broker takes records up to ~1 MiB
        filler = "x" * (size - len(env(contact_id="")))
        out.append((f"huge-contact-id-{size}", a, env(contact_id=filler).encode(), True))
        out.append((f"huge-email-{size}", a, env(emails=[filler[:-12] + "@fuzz.example"]).encode(), True))
        out.append((f"huge-name-{size}", a, json.dumps({"type": "client.upserted", "account_id": a,
                                                        "client_id": CLIENTS[0], "name": filler,
                                                        "domains": ["acme.example"]}).encode(), False))
    escapes = {"lone-high-surrogate": ("\\ud800", True), "lone-low-surrogate": ("\\udfff", True),
               "reversed-pair": ("\\udc00\\ud800", True), "escaped-nul": ("a\\u0000b", True),
               "rtl": ("\\u202eevil", False), "non-bmp": ("\\ud83d\\ude00", False), "noncharacter": ("\\uffff", False)}
    for kind, (lit, refused) in escapes.items():
        for where in ("type", "account_id", "contact_id", "emails", "client_id", "key"):
            value = env(**{where: "@@ODD@@"}) if where != "key" else env(**{"@@ODD@@": 1})
            if where == "emails":
                value = env(emails=["@@ODD@@@fuzz.example"])
            body = value.replace("@@ODD@@", lit)
            # An odd type is an unknown type (skipped); odd but valid Unicode elsewhere may be applied.
            out.append((f"{kind}-{where}", a, body.encode(), refused))
    for account in ACCOUNTS:  # attempts to take over the victim's entities from another account
        out += [
            ("takeover-contact", account, json.dumps(_contact(account, V_CONTACT, f"thief@{account}.example",
                                                              client_id=CLIENTS[0])).encode(), True),
            ("takeover-user", account, json.dumps({"type": "user.upserted", "account_id": account,
                                                   "user_id": V_USER, "email": f"thief@{account}.example",
                                                   "aliases": []}).encode(), True),
            ("takeover-client", account, json.dumps({"type": "client.upserted", "account_id": account,
                                                     "client_id": V_CLIENT, "name": "stolen",
                                                     "domains": [f"{account}.example"]}).encode(), True),
            ("delete-victim-contact", account, json.dumps({"type": "contact.deleted", "account_id": account,
                                                           "contact_id": V_CONTACT}).encode(), False),
            ("delete-victim-user", account, json.dumps({"type": "user.deleted", "account_id": account,
                                                        "user_id": V_USER}).encode(), False),
        ]
    return out


VICTIM_SQL = """
    SELECT 'contact' AS k, contact_id AS id, account_id, coalesce(client_id, '') AS v FROM contacts
     WHERE contact_id = $1
    UNION ALL SELECT 'contact_address', contact_id, account_id, address FROM contact_addresses WHERE contact_id = $1
    UNION ALL SELECT 'user', user_id, account_id, email || coalesce(deleted_at::text, '') FROM users WHERE user_id = $2
    UNION ALL SELECT 'user_address', user_id, account_id, address || '/' || source FROM user_addresses
     WHERE user_id = $2
    UNION ALL SELECT 'client', client_id, account_id, name FROM clients WHERE client_id = $3
    UNION ALL SELECT 'client_domain', client_id, account_id, domain FROM client_domains WHERE client_id = $3
    UNION ALL SELECT 'blocklist', account_id, account_id, entry FROM blocklist_entries WHERE account_id = $4"""

# Rows filed under another account than the entity they belong to: what a directory that let one account
# write to another's ids would leave behind.
MISFILED_SQL = """
    SELECT 'contact_address' AS k, a.contact_id AS id, a.account_id AS filed, c.account_id AS owner
      FROM contact_addresses a JOIN contacts c USING (contact_id) WHERE a.account_id <> c.account_id
    UNION ALL SELECT 'user_address', a.user_id, a.account_id, u.account_id
      FROM user_addresses a JOIN users u USING (user_id) WHERE a.account_id <> u.account_id
    UNION ALL SELECT 'client_domain', d.client_id, d.account_id, c.account_id
      FROM client_domains d JOIN clients c USING (client_id) WHERE d.account_id <> c.account_id"""


async def victim_directory(conn: asyncpg.Connection) -> set[tuple[str, str, str, str]]:
    return {tuple(r) for r in await conn.fetch(VICTIM_SQL, V_CONTACT, V_USER, V_CLIENT, VICTIM)}


def test_hostile_directory_records(stack_processes: Stack):
    corpus: list[bytes] = []

    @settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(raw)
    def collect(value: bytes) -> None:
        corpus.append(value)

    collect()
    assert len(corpus) >= CASES
    asyncio.run(_publish_and_check(stack_processes, corpus))


async def _publish_and_check(stack: Stack, corpus: list[bytes]) -> None:
    bootstrap = stack.env["MAILSYNC_KAFKA_BOOTSTRAP"]
    topic = "crm.directory.v1"
    dlq = await Tail(bootstrap, "crm.directory.v1.dlq").start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=2 * 1024 * 1024)
    conn = await asyncpg.connect(stack.env["MAILSYNC_DATABASE_URL"])
    await producer.start()
    try:
        # The victim: an account the fuzz never writes to, but whose ids the fuzz names.
        for value in (
            {"type": "user.upserted", "account_id": VICTIM, "user_id": V_USER, "email": "owner@victim.example",
             "aliases": ["alias@victim.example"]},
            {"type": "client.upserted", "account_id": VICTIM, "client_id": V_CLIENT, "name": "Victim Client",
             "domains": ["victim-client.example"]},
            _contact(VICTIM, V_CONTACT, "person@victim-client.example", client_id=V_CLIENT),
            {"type": "blocklist.upserted", "account_id": VICTIM, "entries": ["noreply@victim.example"]},
        ):
            await producer.send_and_wait(topic, events.encode(events.envelope(value.pop("type"), value)),
                                         key=VICTIM.encode())
        before = await wait_until(lambda: _victim_complete(conn), what="the victim's directory", timeout=60)

        must_refuse: dict[tuple[int, int], str] = {}
        sent = 0
        for kind, key, value, refused in hostile_corpus():
            meta = await producer.send_and_wait(topic, value, key=key.encode())
            sent += 1
            if refused:
                must_refuse[(meta.partition, meta.offset)] = kind
        pending = [await producer.send(topic, value, key=ACCOUNTS[i % len(ACCOUNTS)].encode())
                   for i, value in enumerate(corpus)]
        await asyncio.gather(*pending)
        sent += len(pending)
        # After all of it, on every key (so every partition the poison went to): valid records.
        markers = [f"marker-{RUN}-{i}" for i in range(MARKERS)]
        for i, marker in enumerate(markers):
            account = [*ACCOUNTS, VICTIM][i % (len(ACCOUNTS) + 1)]
            await producer.send_and_wait(topic, events.encode(events.envelope("contact.upserted", {
                "contact_id": marker, "account_id": account, "client_id": None,
                "emails": [f"{marker}@fuzz.example"]})), key=account.encode())
        async def applied() -> int:
            matcher = stack.procs["matcher"]
            assert matcher.popen.poll() is None, f"the matcher died on the hostile records:\n{matcher.tail()}"
            n = await conn.fetchval("SELECT count(*) FROM contacts WHERE contact_id = ANY($1::text[])", markers)
            return n if n == MARKERS else 0

        # Up to 4 minutes for the records on 2 shared cores.
        await wait_until(applied, timeout=240, interval=0.5,
                         what=f"all {MARKERS} valid records published after {sent} hostile ones")

        # Nothing leaked: the victim's directory is unchanged, and no row is filed under a foreign account.
        assert await victim_directory(conn) == before, "records of other accounts changed the victim's directory"
        misfiled = await conn.fetch(MISFILED_SQL)
        assert not misfiled, f"rows filed under another account: {[tuple(r) for r in misfiled[:5]]}"

        async def all_refused() -> bool:
            await dlq.poll()
            seen = {(v.get("partition"), v.get("offset")) for _, v in dlq.records if v.get("topic") == topic}
            return set(must_refuse) <= seen

        try:
            await wait_until(all_refused, timeout=30, what="every record that must be refused in the DLQ")
        except AssertionError:
            seen = {(v.get("partition"), v.get("offset")) for _, v in dlq.records if v.get("topic") == topic}
            missing = sorted({kind for po, kind in must_refuse.items() if po not in seen})
            raise AssertionError(f"not in the DLQ: {missing}") from None
        dead = [v for _, v in dlq.records if v.get("topic") == topic]
        assert all(v.get("error") for v in dead)  # every refusal says why

        await _positive_controls(producer, conn, before)
        print(f"\ndirectory fuzz: {sent} hostile records, {MARKERS} valid ones after them all applied; "
              f"{len(dead)} refused to the DLQ ({len(must_refuse)} named in advance, all there)")
    finally:
        await producer.stop()
        await conn.close()
        await dlq.stop()


async def _victim_complete(conn: asyncpg.Connection) -> set[tuple[str, str, str, str]] | None:
    rows = await victim_directory(conn)
    return rows if {k for k, *_ in rows} == {"contact", "contact_address", "user", "user_address", "client",
                                             "client_domain", "blocklist"} else None


async def _positive_controls(producer: AIOKafkaProducer, conn: asyncpg.Connection,
                             before: set[tuple[str, str, str, str]]) -> None:
    # 1. The misfiled-row query finds a misfiled row (planted, then rolled back).
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("INSERT INTO contact_addresses (contact_id, account_id, address, is_primary)"
                           " VALUES ($1, $2, 'planted@fuzz.example', false)", V_CONTACT, ACCOUNTS[0])
        planted = await conn.fetch(MISFILED_SQL)
        assert [(r["k"], r["id"], r["filed"]) for r in planted] == [("contact_address", V_CONTACT, ACCOUNTS[0])]
    finally:
        await tx.rollback()
    # 2. The victim comparison sees a change made through the same path by the rightful owner.
    await producer.send_and_wait("crm.directory.v1", events.encode(events.envelope("contact.upserted", _contact(
        VICTIM, V_CONTACT, "person@victim-client.example", "new@victim-client.example", client_id=V_CLIENT))),
        key=VICTIM.encode())

    async def changed() -> set[tuple[str, str, str, str]] | None:
        rows = await victim_directory(conn)
        return rows if rows != before else None

    after = await wait_until(changed, timeout=60, what="the victim's own update")
    assert after - before == {("contact_address", V_CONTACT, VICTIM, "new@victim-client.example")}
    assert before - after == set()
