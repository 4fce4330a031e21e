"""Graph users: `GET /me` and `GET /users/{id | userPrincipalName}` (own profile only, delegated)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from services.sandbox.graph_core import GraphCall, GraphResponse, route
from services.sandbox.model import Mailbox
from services.sandbox.odata import parse_select

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
