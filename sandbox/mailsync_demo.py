"""`mailsync demo seed|trickle`: a demo account in the sandbox, and a realistic trickle of mail.

seed: creates sandbox mailboxes, publishes the account's directory on crm.directory.v1, connects
the demo user's mailbox through the real OAuth path (sandbox auto-consent), prints one JSON line.
trickle: delivers mail (some from contacts, some not) and prints each engagement as it lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import time
import uuid
from typing import Any

import aiohttp
import jwt

from services.core.adapters import tls
from services.core.adapters.kafka import Publisher, consumer
from services.core.domain import events
from services.subscriber.sessions import csrf_token

ACCOUNT = "acct-demo"
TENANT = "11111111-2222-3333-4444-555555555555"
USERS = {  # CRM user id -> (address, aliases, display name)
    "user-alice": ("alice@northwind.example", ["a.smith@northwind.example"], "Alice Smith"),
    "user-bob": ("bob@northwind.example", [], "Bob Jones"),
}
CLIENTS = {"client-acme": ("Acme Corp", ["acme.example"]), "client-globex": ("Globex", ["globex.example"])}
CONTACTS = {
    "contact-jane": ("client-acme", ["jane.doe@acme.example", "jane@acme-mail.example"]),
    "contact-raj": ("client-acme", ["raj.patel@acme.example"]),
    "contact-li": ("client-globex", ["li.wei@globex.example"]),
}
STRANGERS = ["newsletter@shop.example", "noreply@travel.example", "someone@unknown.example"]
SUBJECTS = ["Renewal next quarter", "Quick question about the invoice", "Notes from today's call",
            "Onboarding plan", "Re: pricing", "Weekly check-in"]


def graph_user_id(user_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{user_id}.sandbox"))


def session_token(user_id: str, secret: str, ttl_s: int = 7 * 24 * 3600) -> str:
    return jwt.encode({"sub": user_id, "account_id": ACCOUNT, "exp": int(time.time()) + ttl_s}, secret,
                      algorithm="HS256")


async def _sandbox(http: aiohttp.ClientSession, sandbox: str, path: str, body: dict[str, Any]) -> Any:
    async with http.post(f"{sandbox}{path}", json=body) as resp:
        if resp.status >= 300:
            raise SystemExit(f"mailsync demo: sandbox {path} answered {resp.status}: {await resp.text()}")
        return await resp.json(content_type=None)


def directory_events() -> list[dict[str, Any]]:
    out = [events.envelope("account.upserted", {"account_id": ACCOUNT, "name": "Northwind", "domain_matching": False})]
    for user_id, (email, aliases, _) in USERS.items():
        out.append(events.envelope("user.upserted", {"user_id": user_id, "account_id": ACCOUNT, "email": email,
                                                     "aliases": aliases}))
    for client_id, (name, domains) in CLIENTS.items():
        out.append(events.envelope("client.upserted", {"client_id": client_id, "account_id": ACCOUNT,
                                                       "name": name, "domains": domains}))
    for contact_id, (client_id, emails) in CONTACTS.items():
        out.append(events.envelope("contact.upserted", {"contact_id": contact_id, "account_id": ACCOUNT,
                                                        "client_id": client_id, "emails": emails}))
    return out


async def _connect(http: aiohttp.ClientSession, public_url: str, token: str, secret: str, address: str) -> None:
    """The real OAuth path. mailsync connects only a mailbox of the user's directory addresses, so until the
    matcher has applied the directory the start answers `not_in_directory`: ask again for up to a minute."""
    deadline = time.monotonic() + 60
    while True:
        # login_hint: the sandbox auto-consents only for a hinted address.
        params = {"session": token, "csrf": csrf_token(secret, token), "login_hint": address}
        async with http.get(f"{public_url}/oauth/microsoft365/start", params=params) as resp:
            if resp.status == 200 and "notice=connected" in str(resp.url):
                return
            if "notice=not_in_directory" not in str(resp.url) or time.monotonic() > deadline:
                raise SystemExit(f"mailsync demo: connecting the demo mailbox failed ({resp.status} {resp.url})")
        await asyncio.sleep(0.5)


async def seed() -> int:
    from services.core.adapters.config import load_settings

    settings = load_settings(service="demo")
    sandbox = settings.login_url
    publisher = Publisher(settings)
    await publisher.start()
    try:
        await publisher.publish_many(events.DIRECTORY, [(ACCOUNT, e) for e in directory_events()])
    finally:
        await publisher.stop()
    # unsafe=True: the demo's cookies are for 127.0.0.1, which aiohttp's jar ignores by default.
    async with tls.client_session(settings.ca_file, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for user_id, (email, aliases, name) in USERS.items():
            await _sandbox(http, sandbox, "/sandbox/mailboxes", {
                "user_id": graph_user_id(user_id), "tenant_id": TENANT, "address": email, "aliases": aliases,
                "display_name": name, "auto_consent": True})
        token = session_token("user-alice", settings.session_secret)
        await _connect(http, settings.app_url, token, settings.session_secret, USERS["user-alice"][0])
    print(json.dumps({"account_id": ACCOUNT, "user_id": "user-alice",
                      "settings_url": f"{settings.app_url}/settings/email?session={token}"}), flush=True)
    return 0


def demo_message(rng: random.Random) -> dict[str, Any]:
    alice = USERS["user-alice"][0]
    roll = rng.random()
    if roll < 0.5:
        contact = rng.choice(list(CONTACTS.values()))[1][0]
        return {"folder": "inbox", "from": contact, "to": [alice], "subject": rng.choice(SUBJECTS),
                "body": "Hello Alice"}
    if roll < 0.75:
        contact = rng.choice(list(CONTACTS.values()))[1][0]
        return {"folder": "sentitems", "from": alice, "to": [contact], "cc": [USERS["user-bob"][0]],
                "subject": rng.choice(SUBJECTS), "body": "Hi!"}
    return {"folder": "inbox", "from": rng.choice(STRANGERS), "to": [alice], "subject": "Special offer",
            "body": "Buy now"}


async def trickle(interval_s: float = 4.0) -> int:
    from services.core.adapters.config import load_settings

    settings = load_settings(service="demo")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    feed = consumer(settings, events.ENGAGEMENTS, group=f"demo-feed-{uuid.uuid4()}", auto_offset_reset="latest")
    await feed.start()

    async def show() -> None:
        while not stop.is_set():
            for records in (await feed.getmany(timeout_ms=500)).values():
                for record in records:
                    e = events.decode(record.value)
                    if e["type"] == "engagement.created":
                        who = ", ".join(p["address"] for p in e["participants"] if p["role"] in ("from", "to"))
                        print(f"engagement {e['direction']:8} {e['subject']!r:40} {who}  contacts={e['contact_ids']}",
                              flush=True)

    async def deliver() -> None:
        rng = random.Random()
        async with tls.client_session(settings.ca_file) as http:
            while not stop.is_set():
                message = demo_message(rng)
                await _sandbox(http, settings.login_url,
                               f"/sandbox/mailboxes/{graph_user_id('user-alice')}/messages", message)
                print(f"delivered {message['folder']:9} from {message['from']}: {message['subject']}", flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval_s)

    try:
        await asyncio.gather(show(), deliver())
    finally:
        await feed.stop()
    return 0


async def run_demo(action: str) -> int:
    if action == "seed":
        return await seed()
    print("delivering demo mail; engagements are printed as they land (Ctrl-C stops)", file=sys.stderr)
    return await trickle()
