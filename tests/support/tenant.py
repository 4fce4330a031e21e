"""Shared steps of the tenant-wide connection's end-to-end tests: an organisation in the sandbox, the
tenant connection created through the API, and the administrator following the consent link."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from tests.support.stack import Mailbox, Stack


async def org(stack: Stack, account: str, users: int, **policy: Any) -> tuple[str, list[Mailbox]]:
    """A Microsoft 365 organisation whose mailboxes are the account's directory users, none signed in."""
    tenant = str(uuid.uuid4())
    boxes = [await stack.new_mailbox(account, connect=False, tenant_id=tenant, auto_consent=False)
             for _ in range(users)]
    await stack.sandbox("POST", f"/sandbox/tenants/{tenant}/policy", {"auto_admin_consent": True, **policy})
    return tenant, boxes


async def create(stack: Stack, account: str, tenant: str) -> dict[str, Any]:
    status, body = await stack.api("POST", f"/api/v1/accounts/{account}/tenant-connection", {"tenant_id": tenant})
    assert status == 200, body
    return body


async def follow(stack: Stack, url: str) -> tuple[int, str]:
    """The administrator opens the link in their own browser (the sandbox consents at once)."""
    assert stack.http is not None
    async with stack.http.get(url) as resp:
        return resp.status, await resp.text()


async def consent(stack: Stack, account: str, tenant: str) -> dict[str, Any]:
    created = await create(stack, account, tenant)
    status, page = await follow(stack, created["admin_consent_url"])
    assert status == 200 and "Consent recorded" in page, page
    return created


async def tenant_view(stack: Stack, account: str) -> dict[str, Any]:
    status, body = await stack.api("GET", f"/api/v1/accounts/{account}/tenant-connection")
    assert status == 200, body
    return body


async def connection(stack: Stack, user_id: str) -> dict[str, Any]:
    status, view = await stack.api("GET", f"/api/v1/users/{user_id}/connection")
    assert status == 200, view
    return view


def session(stack: Stack, user_id: str, account: str, *, admin: bool = False) -> str:
    claims: dict[str, Any] = {"sub": user_id, "account_id": account, "exp": int(time.time()) + 600}
    if admin:
        claims["role"] = "admin"
    return jwt.encode(claims, stack.env["MAILSYNC_SESSION_SECRET"], algorithm="HS256")
