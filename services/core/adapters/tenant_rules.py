"""Pure decisions of the tenant-wide connection: what an app-only token failure means, whether a tenant's
verified domains cover the account's users, and which of the account's users a tenant connection enrols."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from services.core.adapters.graph.errors import Classified, Severity

# The administrator's consent is gone (the application has no service principal in the tenant any more,
# or it was disabled): the tenant connection is `consent_revoked` and an administrator must consent again.
# entra-docs reference-error-codes: 700016 UnauthorizedClient_DoesNotMatchRequest (app not found in the
# directory), 7000229 missing service principal, 7000112 application disabled, 65001 not consented.
CONSENT_GONE_CODES = frozenset({700016, 7000229, 7000112, 65001, 90094})
# mailsync's own credential is refused (certificate not registered, assertion invalid, secret wrong or
# expired): the operator's problem, not the organisation's; never a consent status.
CREDENTIAL_CODES = frozenset({700027, 700024, 700021, 7000215, 7000222, 700212, 50027, 7000218})
_AADSTS = re.compile(r"AADSTS(\d{4,9})")

CONSENT_REVOKED_REASON = ("Your organisation's administrator withdrew mailsync's consent (AADSTS{code}). Mail is "
                          "not being synced for anyone in the organisation until an administrator consents again "
                          "with a new consent link.")
CREDENTIAL_REASON = ("Microsoft 365 refused mailsync's application credential (AADSTS{code}); the operator must "
                     "check MAILSYNC_APP_CERT_FILE and the certificate registered with the application.")


def classify_app_token_failure(message: str, status: int | None) -> Classified:
    """An azure-identity failure to get an app-only token: its message carries the AADSTS code."""
    codes = [int(c) for c in _AADSTS.findall(message or "")]
    for code in codes:
        if code in CONSENT_GONE_CODES:
            return Classified(Severity.CONSENT, f"AADSTS{code}", CONSENT_REVOKED_REASON.format(code=code))
    for code in codes:
        if code in CREDENTIAL_CODES:
            return Classified(Severity.PERMANENT, f"AADSTS{code}", CREDENTIAL_REASON.format(code=code))
    if status is None or status == 429 or status >= 500 or not codes:
        return Classified(Severity.TRANSIENT, f"http_{status}" if status else "network_error",
                          "Microsoft 365 is temporarily unavailable.")
    return Classified(Severity.PERMANENT, f"AADSTS{codes[0]}", "Microsoft 365 refused mailsync's app-only "
                      f"token request (AADSTS{codes[0]}).")


def mail_domain(address: str) -> str:
    return address.rsplit("@", 1)[-1].strip().lower() if "@" in address else ""


@dataclass(frozen=True)
class DomainCheck:
    ok: bool
    covered: frozenset[str]  # account domains the tenant has verified
    foreign: frozenset[str]  # account domains it has not
    reason: str | None


def check_domains(account_addresses: Iterable[str], verified: Iterable[str]) -> DomainCheck:
    """The tenant may be enrolled for the account only when every mail domain of the account's directory
    users is one of the tenant's verified domains: an account's consent link completed by another
    organisation's administrator (or a tenant id typed wrong) must enrol nobody."""
    domains = {d for d in (mail_domain(a) for a in account_addresses) if d}
    verified_set = {v.strip().lower() for v in verified if v and v.strip()}
    foreign = frozenset(domains - verified_set)
    covered = frozenset(domains & verified_set)
    if not domains:
        return DomainCheck(False, covered, foreign, "The account has no directory users with an email address "
                                                    "yet, so mailsync cannot tell whether this organisation is "
                                                    "yours; add users and consent again.")
    if foreign:
        listed = ", ".join(sorted(foreign)[:5])
        return DomainCheck(False, covered, foreign,
                           f"This Microsoft 365 organisation has not verified the domain(s) {listed} of your "
                           "users, so its consent was not used and nobody was enrolled. An administrator of the "
                           "organisation that owns these domains must open the consent link.")
    return DomainCheck(True, covered, foreign, None)


# Exchange's application access policy refusing an app-only call for one mailbox: 403 ErrorAccessDenied
# ("Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
# learn.microsoft.com/graph/auth-limit-mailbox-access). A policy change takes effect for a mailbox already
# enrolled too: then the mailbox is out_of_scope, not a failure, and rechecked on the out_of_scope schedule.
ACCESS_POLICY_DENIED = "ErrorAccessDenied"


def outside_access_policy(status: int | None, error_code: str) -> bool:
    """Whether an app-only Graph error for one mailbox says the access policy excludes it."""
    return status == 403 and error_code == ACCESS_POLICY_DENIED
