"""The running system for integration and end-to-end tests: sandbox, subscriber, matcher, renewer as
real processes against the real Kafka and PostgreSQL that `make test` started."""

from __future__ import annotations

import base64
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt

from mailsync_sandbox.local_ca import local_tls as _local_tls
from services.core.adapters.config import Settings, load_settings
from services.core.adapters.kafka import Publisher
from services.core.adapters.tls import client_session
from services.core.domain import events
from services.subscriber.sessions import csrf_token
from tests.support.procs import MAILSYNC, ROOT, Proc, free_port
from tests.support.wait import wait_until


def infra_env() -> dict[str, str]:
    missing = [n for n in ("MAILSYNC_KAFKA_BOOTSTRAP", "MAILSYNC_DATABASE_URL") if not os.environ.get(n)]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not set: run the suite with `make test`, which starts "
                           "Kafka and PostgreSQL and sets them")
    return {n: os.environ[n] for n in ("MAILSYNC_KAFKA_BOOTSTRAP", "MAILSYNC_DATABASE_URL")}


TLS_DIR = ROOT / ".mailsync" / "tls"  # the local CA, made once and shared with `make up`


def local_tls() -> dict[str, tuple[Path, Path]]:
    """The local CA and the certificates of the sandbox and the subscriber's Graph-facing listener."""
    return _local_tls(TLS_DIR, "sandbox", "subscriber")


def local_ca_file() -> str:
    return str(local_tls()["ca"][0])


def client(ca_file: str, **options: Any) -> aiohttp.ClientSession:
    """A test's HTTP client: verifies the local stack's HTTPS against its CA, never without."""
    return client_session(ca_file, **options)


def browser(stack: Stack | None = None) -> aiohttp.ClientSession:
    """Like a browser: keeps cookies (for 127.0.0.1, which aiohttp's jar ignores by default) and trusts the CA."""
    return client(stack.ca_file if stack else local_ca_file(), cookie_jar=aiohttp.CookieJar(unsafe=True))


def service_env(sandbox_url: str, app_url: str, **extra: str) -> dict[str, str]:
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    env = dict(os.environ)
    env.update(infra_env())
    env.update({
        "MAILSYNC_GRAPH_URL": f"{sandbox_url}/v1.0", "MAILSYNC_LOGIN_URL": sandbox_url,
        "MAILSYNC_CLIENT_ID": "6f1c6d1e-0000-4000-8000-000000000001",
        "MAILSYNC_CLIENT_SECRET": secrets.token_urlsafe(24), "MAILSYNC_APP_URL": app_url,
        "MAILSYNC_TOKEN_KEYS": f"k1:{key}", "MAILSYNC_API_TOKEN": secrets.token_urlsafe(24),
        "MAILSYNC_SESSION_SECRET": secrets.token_urlsafe(32), "MAILSYNC_HTTP_HOST": "127.0.0.1",
        "MAILSYNC_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
        # Every service refuses (and logs) a Graph or identity call made inside a database transaction.
        "MAILSYNC_TRANSACTION_GUARD": "true",
        # Intervals shortened so the renewer's work is observable within a test.
        "MAILSYNC_RENEWER_TICK_S": "1",
    })
    env.update(extra)
    return env


@dataclass
class Mailbox:
    user_id: str  # the CRM's user id
    account_id: str
    graph_id: str  # the sandbox (Graph) user id
    address: str
    tenant_id: str
    connection_id: str = ""


@dataclass
class Stack:
    env: dict[str, str]
    sandbox_url: str
    api_url: str
    ca_file: str = ""
    public_url: str = ""  # the subscriber's HTTPS listener: what Graph calls
    procs: dict[str, Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    settings: Settings | None = None
    publisher: Publisher | None = None
    http: aiohttp.ClientSession | None = None
    pool: asyncpg.Pool | None = None

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['MAILSYNC_API_TOKEN']}"}

    def session_token(self, user_id: str, account_id: str, ttl_s: int = 3600) -> str:
        return jwt.encode({"sub": user_id, "account_id": account_id, "exp": int(time.time()) + ttl_s},
                          self.env["MAILSYNC_SESSION_SECRET"], algorithm="HS256")

    def csrf(self, session_token: str) -> str:
        """The CSRF token the settings page puts in its forms (and `/oauth/microsoft365/start` requires)."""
        return csrf_token(self.env["MAILSYNC_SESSION_SECRET"], session_token)

    async def sandbox(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.http is not None
        async with self.http.request(method, f"{self.sandbox_url}{path}", json=body) as resp:
            assert resp.status < 300, f"sandbox {method} {path}: {resp.status} {await resp.text()}"
            return await resp.json(content_type=None) if resp.status != 204 else None

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.request(method, f"{self.api_url}{path}", json=body, headers=self.api_headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def publish_directory(self, *records: dict[str, Any]) -> None:
        assert self.publisher is not None
        await self.publisher.publish_many(events.DIRECTORY, [(r["account_id"], r) for r in records])

    def new_account(self) -> str:
        return f"acct-{uuid.uuid4().hex[:10]}"

    async def add_contact(self, account_id: str, *emails: str, client_id: str | None = None) -> str:
        contact_id = f"contact-{uuid.uuid4().hex[:10]}"
        await self.publish_directory(events.envelope("contact.upserted", {
            "contact_id": contact_id, "account_id": account_id, "client_id": client_id, "emails": list(emails)}))
        return contact_id

    async def wait_contact(self, contact_id: str) -> None:
        await self.wait_row("SELECT 1 FROM contacts WHERE contact_id = $1", contact_id, what=f"contact {contact_id}")

    async def wait_row(self, sql: str, *args: Any, what: str, timeout: float = 20.0) -> Any:
        assert self.pool is not None
        pool = self.pool

        async def present() -> Any:
            return await pool.fetchrow(sql, *args)

        return await wait_until(present, what=what, timeout=timeout)

    async def new_mailbox(self, account_id: str, *, aliases: tuple[str, ...] = (), connect: bool = True,
                          tenant_id: str | None = None, auto_consent: bool = True) -> Mailbox:
        user_id = f"user-{uuid.uuid4().hex[:10]}"
        mailbox = Mailbox(user_id=user_id, account_id=account_id, graph_id=str(uuid.uuid4()),
                          address=f"{user_id}@{account_id}.example", tenant_id=tenant_id or str(uuid.uuid4()))
        await self.sandbox("POST", "/sandbox/mailboxes", {
            "user_id": mailbox.graph_id, "tenant_id": mailbox.tenant_id, "address": mailbox.address,
            "aliases": list(aliases), "display_name": user_id, "auto_consent": auto_consent})
        await self.publish_directory(events.envelope("user.upserted", {
            "user_id": user_id, "account_id": account_id, "email": mailbox.address, "aliases": list(aliases)}))
        await self.wait_row("SELECT 1 FROM users WHERE user_id = $1", user_id, what=f"user {user_id}")
        if connect:
            mailbox.connection_id = await self.connect(mailbox)
        return mailbox

    async def connect(self, mailbox: Mailbox) -> str:
        """The real OAuth path: start → sandbox authorize (auto-consent) → callback → settings page."""
        session = self.session_token(mailbox.user_id, mailbox.account_id)
        async with browser(self) as tab, tab.get(
                f"{self.api_url}/oauth/microsoft365/start",
                               params={"session": session, "csrf": self.csrf(session),
                                       "login_hint": mailbox.address}) as resp:
            assert resp.status == 200 and "notice=connected" in str(resp.url), \
                    f"connect failed: {resp.status} {resp.url}"
        status, view = await self.api("GET", f"/api/v1/users/{mailbox.user_id}/connection")
        assert status == 200 and view["status"] == "connected", view
        return str(view["connection_id"])

    async def deliver(self, mailbox: Mailbox, **message: Any) -> str:
        message.setdefault("folder", "inbox")
        message.setdefault("to", [mailbox.address])
        message.setdefault("subject", "Hello")
        message.setdefault("body", "Body text")
        message.setdefault("internet_message_id", f"<{uuid.uuid4()}@test.example>")
        created = await self.sandbox("POST", f"/sandbox/mailboxes/{mailbox.graph_id}/messages", message)
        return str(message["internet_message_id"]) if created else ""


async def quiet(stack: Stack, db: asyncpg.Pool, mailbox: Mailbox) -> None:
    """The mailbox's first poll and first back-fill are over, and its next poll is a day away: from
    here on only what the test does makes the renewer poll it."""
    await wait_until(lambda: db.fetchval(
        "SELECT last_polled_at IS NOT NULL AND poll_lease_until IS NULL FROM mailbox_connections"
        " WHERE connection_id = $1::uuid", mailbox.connection_id), timeout=40, what="the first poll")
    await wait_until(lambda: db.fetchval(
        "SELECT bool_and(status = 'done') FROM sync_jobs WHERE connection_id = $1::uuid", mailbox.connection_id),
        timeout=40, what="the first back-fill")
    await db.execute("UPDATE mailbox_connections SET next_poll_at = now() + interval '1 day'"
                     " WHERE connection_id = $1::uuid", mailbox.connection_id)


def start_stack(infra: dict[str, str] | None = None, prefix: str = "") -> Stack:
    """Migrations, topics, the sandbox and the three services; `infra` overrides Kafka/PostgreSQL."""
    tls = local_tls()
    sandbox_port, api_port, https_port = free_port(), free_port(), free_port()
    sandbox_url, api_url = f"https://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{api_port}"
    public_url, ca_file = f"https://127.0.0.1:{https_port}", str(tls["ca"][0])
    env = {**service_env(sandbox_url, api_url, MAILSYNC_PUBLIC_URL=public_url, MAILSYNC_CA_FILE=ca_file,
                         MAILSYNC_TLS_CERT_FILE=str(tls["subscriber"][0]),
                         MAILSYNC_TLS_KEY_FILE=str(tls["subscriber"][1]), MAILSYNC_HTTPS_PORT=str(https_port)),
           **(infra or {})}
    stack = Stack(env=env, sandbox_url=sandbox_url, api_url=api_url, ca_file=ca_file, public_url=public_url)
    try:
        for cmd in ("migrate", "topics"):
            code = Proc(prefix + cmd, [*MAILSYNC, cmd], env).popen.wait(120)
            assert code == 0, f"mailsync {cmd} failed ({code})"
        cert, key = (str(p) for p in tls["sandbox"])
        argv = [*MAILSYNC, "sandbox", "--port", str(sandbox_port), "--tls-cert", cert, "--tls-key", key,
                "--ca-file", ca_file]
        sandbox = stack.procs["sandbox"] = Proc(prefix + "sandbox", argv, env)
        sandbox.wait_for_line(r"sandbox listening on")
        for name, port in (("subscriber", api_port), ("matcher", free_port()), ("renewer", free_port())):
            stack.ports[name] = port
            proc = stack.procs[name] = Proc(prefix + name, [*MAILSYNC, name],
                                            {**env, "MAILSYNC_HTTP_PORT": str(port)})
            proc.wait_http_ok(f"http://127.0.0.1:{port}/readyz")
    except BaseException:
        stop_stack(stack)
        raise
    return stack


async def open_clients(stack: Stack) -> Stack:
    """The test side's own clients of the stack: settings, a publisher, HTTP, a database pool."""
    from services.core.adapters.db.pool import create_pool

    stack.settings = load_settings(stack.env, service="tests")
    stack.publisher = Publisher(stack.settings)
    await stack.publisher.start()
    stack.http = client(stack.ca_file)
    stack.pool = await create_pool(stack.settings)
    return stack


async def close_clients(stack: Stack) -> None:
    if stack.pool is not None:
        await stack.pool.close()
    if stack.http is not None:
        await stack.http.close()
    if stack.publisher is not None:
        await stack.publisher.stop()


def stop_stack(stack: Stack) -> dict[str, int]:
    return {name: proc.stop() for name, proc in reversed(list(stack.procs.items()))}
