"""Graph's access rules for app-only tokens (application permissions, tenant-wide).

An app-only token reaches any mailbox of its own tenant (`/users/{id | address}/...`), shared mailboxes
included, given the role: mail needs `Mail.Read` (or `Mail.ReadBasic.All`, `Mail.ReadWrite`), profiles
`User.Read.All`. Other tenants' users are not found (404). `/me` has no meaning without a signed-in user:
400 (Graph: "/me request is only valid with delegated authentication flow."). An Exchange application
access policy (`POST /sandbox/tenants/{id}/policy {"application_access_policy": [addresses]}`) limits mail
to the listed mailboxes: the others answer 403 `ErrorAccessDenied` (Graph docs auth-limit-mailbox-access:
"Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.").
Profiles are outside the policy (it is Exchange's, not the directory's).
"""

from __future__ import annotations

from mailsync_sandbox.graph_core import ME, GraphCall, GraphResponse, Route, graph_error
from mailsync_sandbox.model import Mailbox
from mailsync_sandbox.tokens import AccessToken

MAIL_ROLES = frozenset({"mail.read", "mail.readbasic.all", "mail.readwrite"})
PROFILE_ROLES = frozenset({"user.read.all", "user.readbasic.all", "directory.read.all"})
POLICY_DENIED = "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings."


def resolve(call: GraphCall, found: Route, ref: str | None, token: AccessToken) -> Mailbox | GraphResponse | None:
    """The mailbox an app-only call concerns (None for tenant-wide routes), or Graph's refusal."""
    if ref == ME:
        return graph_error(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
    if found.scope == "app":
        return None
    roles = {r.lower() for r in token.grant.scopes}
    mailbox = call.sb.mail.get(ref or "")
    if mailbox is None or mailbox.tenant_id.lower() != token.grant.tenant_id.lower():
        if found.scope == "profile":
            return graph_error(404, "Request_ResourceNotFound", f"Resource '{ref}' does not exist or one of its "
                               "queried reference-property objects are not present.")
        return graph_error(404, "ErrorInvalidUser", f"The requested user '{ref}' is invalid.")
    if found.scope == "profile":
        if not roles & PROFILE_ROLES:
            return graph_error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the "
                               "operation.")
        return mailbox
    if not roles & MAIL_ROLES:
        return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
    if not call.sb.tokens.within_access_policy(mailbox.tenant_id, mailbox.addresses()):
        return graph_error(403, "ErrorAccessDenied", POLICY_DENIED)
    return mailbox


def may_subscribe(call: GraphCall, mailbox: Mailbox, token: AccessToken) -> bool:
    """Whether an app-only token may watch this mailbox's messages."""
    return (mailbox.tenant_id.lower() == token.grant.tenant_id.lower()
            and bool({r.lower() for r in token.grant.scopes} & MAIL_ROLES)
            and call.sb.tokens.within_access_policy(mailbox.tenant_id, mailbox.addresses()))
