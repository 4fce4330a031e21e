"""The sandbox on a real loopback socket, a notification receiver, and OAuth helpers for its tests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest_asyncio
from aiohttp import web

from mailsync_sandbox import create_app
from mailsync_sandbox.local_ca import local_tls as _local_tls
from mailsync_sandbox.state import Sandbox
from services.core.adapters.tls import client_session, server_context
from tests.support.wait import wait_until

CLIENT_ID = "6f1c6d1e-0000-4000-8000-00000000abcd"
TLS_DIR = Path(__file__).resolve().parents[2] / ".mailsync" / "tls"


def CA_FILE() -> str:
    """The local CA that signs the in-process sandbox's and receiver's certificates."""
    return str(_local_tls(TLS_DIR)["ca"][0])
SCOPES = "openid profile email offline_access User.Read Mail.Read"


async def _serve(app: web.Application, cert: tuple[Path, Path]) -> tuple[web.AppRunner, str]:
    """HTTPS, as Microsoft serves Graph and requires of notification receivers (certificates of the local CA)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(str(cert[0]), str(cert[1])))
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    return runner, f"https://127.0.0.1:{port}"


@dataclass
class Receiver:
    """Answers Graph's validation requests and records notifications; behaviour is scripted per test."""

    url: str = ""
    validation: str = "echo"  # echo | wrong | status500 | json
    statuses: list[int] = field(default_factory=list)  # answers to the next notification POSTs (else 202)
    delays: list[float] = field(default_factory=list)  # seconds to wait before answering the next POSTs
    validation_delays: list[float] = field(default_factory=list)  # ... the next validation requests
    validations: list[str] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    lifecycle_posts: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        self.validation = "echo"
        for items in (self.statuses, self.delays, self.validation_delays, self.validations, self.posts,
                      self.lifecycle_posts):
            items.clear()

    @property
    def notifications(self) -> list[dict[str, Any]]:
        return [item for post in self.posts for item in post["value"]]

    async def _answer(self, request: web.Request, sink: list[dict[str, Any]]) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            assert request.content_type == "text/plain"
            self.validations.append(token)
            if self.validation_delays:
                await asyncio.sleep(self.validation_delays.pop(0))
            if self.validation == "wrong":
                return web.Response(text=token + "x", content_type="text/plain")
            if self.validation == "status500":
                return web.Response(status=500)
            if self.validation == "json":
                return web.json_response(token)
            return web.Response(text=token, content_type="text/plain")
        body = await request.json()
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        sink.append(body)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 202)

    async def notify(self, request: web.Request) -> web.Response:
        return await self._answer(request, self.posts)

    async def lifecycle(self, request: web.Request) -> web.Response:
        return await self._answer(request, self.lifecycle_posts)


@dataclass
class Env:
    url: str
    sb: Sandbox
    http: aiohttp.ClientSession
    receiver: Receiver

    async def control(self, method: str, path: str, body: Any = None, *, expect: int | None = None) -> Any:
        async with self.http.request(method, f"{self.url}{path}", json=body) as resp:
            payload = await resp.json(content_type=None) if resp.status != 204 else None
            if expect is not None:
                assert resp.status == expect, (resp.status, payload)
            else:
                assert resp.status < 300, (resp.status, payload)
            return payload

    async def graph(self, method: str, path: str, token: str, *, body: Any = None,
                    headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        url = path if path.startswith("http") else f"{self.url}/v1.0{path}"
        async with self.http.request(method, url, json=body,
                                     headers={"Authorization": f"Bearer {token}", **(headers or {})}) as resp:
            payload = await resp.json(content_type=None) if resp.status != 204 else None
            return resp.status, payload, resp.headers

    async def mailbox(self, *, auto_consent: bool = True, tenant_id: str | None = None,
                      aliases: tuple[str, ...] = ()) -> dict[str, Any]:
        user_id = str(uuid.uuid4())
        body = {"user_id": user_id, "tenant_id": tenant_id or str(uuid.uuid4()),
                "address": f"u{user_id[:8]}@contoso.example", "aliases": list(aliases),
                "display_name": "Alex Wilber", "auto_consent": auto_consent}
        result: dict[str, Any] = await self.control("POST", "/sandbox/mailboxes", body, expect=201)
        return result

    async def deliver(self, user_id: str, **message: Any) -> str:
        message.setdefault("from", "client@fabrikam.example")
        message.setdefault("subject", "Hello")
        created = await self.control("POST", f"/sandbox/mailboxes/{user_id}/messages", message, expect=201)
        return str(created["id"])

    async def token(self, user_id: str, scopes: list[str] | None = None) -> str:
        body = {"user_id": user_id, "scopes": scopes or ["User.Read", "Mail.Read"]}
        return str((await self.control("POST", "/sandbox/tokens", body))["access_token"])

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.control("GET", "/sandbox/stats")
        return result

    async def settled(self) -> dict[str, Any]:
        """Stats once no notification is queued or in flight."""
        async def idle() -> dict[str, Any] | None:
            stats = await self.stats()
            quiet = stats["notifications"]["pending"] == 0 and stats["notifications"]["in_flight"] == 0
            return stats if quiet else None
        return await wait_until(idle, timeout=10, interval=0.02, what="notifications settled")

    # --- identity ----------------------------------------------------------------------------

    async def authorize(self, address: str, *, tenant: str = "organizations", challenge: str | None = None,
                        redirect_uri: str = "http://127.0.0.1:9/callback", **extra: str) -> aiohttp.ClientResponse:
        params = {"client_id": CLIENT_ID, "response_type": "code", "redirect_uri": redirect_uri,
                  "scope": SCOPES, "state": "st-1", "login_hint": address, **extra}
        if challenge is not None:
            params.update(code_challenge=challenge, code_challenge_method="S256")
        async with self.http.get(f"{self.url}/{tenant}/oauth2/v2.0/authorize", params=params,
                                 allow_redirects=False) as resp:
            await resp.read()
            return resp

    async def token_post(self, form: dict[str, str], *, tenant: str = "organizations") -> tuple[int, dict[str, Any]]:
        full = {"client_id": CLIENT_ID, "client_secret": "s3cret", **form}
        async with self.http.post(f"{self.url}/{tenant}/oauth2/v2.0/token", data=full) as resp:
            return resp.status, await resp.json()

    async def sign_in(self, address: str) -> dict[str, Any]:
        """Authorization code + PKCE through an auto-consent mailbox; returns the token response."""
        verifier, challenge = pkce()
        resp = await self.authorize(address, challenge=challenge)
        assert resp.status == 302, resp.status
        status, body = await self.token_post({"grant_type": "authorization_code", "code": query(resp)["code"],
                                              "code_verifier": verifier,
                                              "redirect_uri": "http://127.0.0.1:9/callback"})
        assert status == 200, body
        return body


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query(resp: aiohttp.ClientResponse) -> dict[str, str]:
    location = resp.headers["Location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def jwt_claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def servers() -> AsyncIterator[tuple[str, Sandbox, Receiver]]:
    sb = Sandbox()
    tls = _local_tls(TLS_DIR, "sandbox", "receiver")
    sandbox_runner, sandbox_url = await _serve(create_app(sb, ca_file=str(tls["ca"][0])), tls["sandbox"])
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/notify", receiver.notify)
    app.router.add_post("/lifecycle", receiver.lifecycle)
    receiver_runner, receiver.url = await _serve(app, tls["receiver"])
    try:
        yield sandbox_url, sb, receiver
    finally:
        await sandbox_runner.cleanup()
        await receiver_runner.cleanup()


@pytest_asyncio.fixture(loop_scope="session")
async def env(servers: tuple[str, Sandbox, Receiver]) -> AsyncIterator[Env]:
    url, sb, receiver = servers
    async with client_session(CA_FILE()) as http:
        environment = Env(url, sb, http, receiver)
        await environment.control("POST", "/sandbox/reset")
        receiver.reset()
        yield environment


__all__ = ["CA_FILE", "CLIENT_ID", "Env", "Receiver", "env", "jwt_claims", "pkce", "query", "servers"]
