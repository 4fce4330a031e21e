"""Graph users: `GET /me` and `GET /users/{id | userPrincipalName}` (own profile only with a delegated token;
any user of the tenant with an app-only token holding User.Read.All), and `GET /organization`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mailsync_sandbox.graph_core import GraphCall, GraphResponse, route
from mailsync_sandbox.model import Mailbox
from mailsync_sandbox.odata import parse_select

USER_FIELDS = ("id", "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
               "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "proxyAddresses",
               "otherMails", "accountEnabled", "mailNickname", "userType")
DEFAULT_FIELDS = ("businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
                  "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id")


def user_json(mailbox: Mailbox, select: list[str] | None) -> dict[str, Any]:
    given, _, surname = mailbox.display_name.partition(" ")
    values: dict[str, Any] = {
        "id": mailbox.user_id, "businessPhones": [], "displayName": mailbox.display_name, "givenName": given or None,
        "jobTitle": None, "mail": mailbox.address, "mobilePhone": None, "officeLocation": None,
        "preferredLanguage": "en-US", "surname": surname or None, "userPrincipalName": mailbox.address,
        "proxyAddresses": [f"SMTP:{mailbox.address}", *(f"smtp:{a}" for a in mailbox.aliases)],
        "otherMails": [], "accountEnabled": True, "mailNickname": mailbox.address.split("@")[0], "userType": "Member",
    }
    return {f: values[f] for f in (select if select is not None else DEFAULT_FIELDS)}


@route("GET", "", "profile")
async def get_user(call: GraphCall) -> GraphResponse:
    select = parse_select(call.query, USER_FIELDS, "user")
    entity = f"users({','.join(select)})" if select else "users"
    body = {"@odata.context": f"{call.graph_base}/$metadata#{quote(entity, safe='(),')}/$entity",
            **user_json(call.me(), select)}
    return GraphResponse(200, body)


def verified_domains(call: GraphCall, tenant_id: str) -> list[str]:
    """Set by policy, else the domains of the tenant's mailboxes (sorted)."""
    chosen = call.sb.tokens.verified_domains.get(tenant_id.lower())
    if chosen is not None:
        return list(chosen)
    return sorted({m.address.rsplit("@", 1)[1].lower() for m in call.sb.mail.mailboxes.values()
                   if m.tenant_id.lower() == tenant_id.lower()})


@route("GET", "organization", "app")
async def organization(call: GraphCall) -> GraphResponse:
    """`GET /organization`: the caller's tenant with its verifiedDomains (Graph: organization resource)."""
    assert call.token is not None
    tenant_id = call.token.grant.tenant_id
    domains = verified_domains(call, tenant_id)
    entry = {
        "id": tenant_id, "displayName": f"Sandbox organisation {tenant_id[:8]}", "tenantType": "AAD",
        "verifiedDomains": [{"capabilities": "Email, OfficeCommunicationsOnline", "isDefault": i == 0,
                             "isInitial": False, "name": name, "type": "Managed"} for i, name in enumerate(domains)],
    }
    return GraphResponse(200, {"@odata.context": f"{call.graph_base}/$metadata#organization", "value": [entry]})
