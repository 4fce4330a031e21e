"""What the pages say, in plain words: a diagnose answer with the one thing to do, an import's progress, the
link and message an administrator needs. Pure functions (no I/O), unit-tested."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from services.core.domain.reasons import FOLDER_NAMES


@dataclass(frozen=True)
class Answer:
    headline: str
    todo: str  # the one thing to do about it
    details: tuple[str, ...]


_HEADLINES = {
    "matched": "This email is on your clients' timelines.",
    "not_matched": "This email is not on any timeline: nobody in it is a known contact.",
    "excluded": "mailsync left this email out on purpose.",
    "not_seen": "mailsync has not seen this email.",
}


def _codes(result: dict[str, Any]) -> list[str]:
    return [str(r.get("code", "")) for r in result.get("reasons") or [] if isinstance(r, dict)]


def _outside_addresses(result: dict[str, Any]) -> list[str]:
    found = []
    for reason in result.get("reasons") or []:
        if isinstance(reason, dict) and reason.get("code") == "unknown_address":
            found.append(str(reason.get("detail", "")).split(" ", 1)[0])
    return found


def diagnose_answer(result: dict[str, Any], *, connected_at: datetime | None = None,
                    sent_at: datetime | None = None) -> Answer:
    """The diagnose endpoint's answer as a headline, the one thing to do, and the reasons' own words."""
    decision = str(result.get("decision", ""))
    codes = _codes(result)
    details = tuple(str(r.get("detail", "")) for r in result.get("reasons") or []
                    if isinstance(r, dict) and r.get("code") not in ("direction_inbound", "direction_outbound"))
    headline = _HEADLINES.get(decision, "mailsync could not tell what happened to this email.")
    if decision == "matched":
        todo = "Nothing: open the contact's timeline in the CRM to see it."
    elif "excluded_folder" in codes:
        folder = str(result.get("folder") or "")
        name = FOLDER_NAMES.get(folder.lower(), folder or "a folder mailsync skips")
        if folder.lower() == "junkemail":
            todo = (f"It was in {name}. In Outlook, mark it as Not junk (it moves to your Inbox); mailsync adds "
                    "it at the next sync.")
        else:
            todo = f"It is in {name}. Move it to your Inbox (or any other folder); mailsync adds it at the next sync."
    elif "draft" in codes:
        todo = "Send it: drafts never appear on timelines."
    elif "blocklisted_address" in codes or "blocklisted_domain" in codes:
        todo = "Ask an administrator to take the address off the company's blocklist if this email should count."
    elif "internal_only" in codes:
        todo = "Nothing: mail only between you and colleagues never appears on clients' timelines."
    elif "no_known_participant" in codes or "unknown_address" in codes:
        people = ", ".join(a for a in _outside_addresses(result) if "@" in a)
        todo = (f"Add {people or 'the address'} to the contact in the CRM: mailsync then links this email (and "
                "earlier ones) to the contact's timeline.")
    elif decision == "not_seen" or "not_seen" in codes:
        if sent_at and connected_at and sent_at < connected_at:
            todo = (f"It was sent before you connected ({connected_at:%-d %b %Y}). Use Import older email below "
                    f"with a range that covers {sent_at:%-d %b %Y}.")
        elif "never_connected" in codes:
            todo = "Connect your mailbox first."
        else:
            todo = ("Press Sync now. If it still does not appear, check that it is in this mailbox (not another "
                    "account's) and not in Junk Email.")
    else:
        todo = "If this looks wrong, send this answer to your administrator."
    return Answer(headline, todo, details)


def looks_like_message_id(text: str) -> bool:
    """A pasted Message-ID (one line, no header name) rather than a block of Internet headers."""
    line = text.strip()
    return "\n" not in line and "@" in line and ":" not in line.split("@", 1)[0]


def as_message_id(text: str) -> str:
    line = text.strip()
    return line if line.startswith("<") else f"<{line.strip('<>')}>"


def admin_consent_link(login_url: str, client_id: str, app_url: str, tenant_id: str | None) -> str:
    """Microsoft's admin consent endpoint for mailsync in the user's organisation (docs/graph.md)."""
    query = urlencode({"client_id": client_id, "scope": "https://graph.microsoft.com/.default",
                       "redirect_uri": f"{app_url.rstrip('/')}/oauth/microsoft365/admin-callback"})
    return f"{login_url.rstrip('/')}/{tenant_id or 'organizations'}/v2.0/adminconsent?{query}"


def words_to_send(link: str, mailbox: str | None) -> str:
    whose = f" ({mailbox})" if mailbox else ""
    return ("Hello,\n\nI use mailsync to keep my emails with clients on their CRM timelines. Microsoft 365 needs an "
            f"administrator of our organisation to approve it before it can read my mailbox{whose}.\n\nCould you "
            "open this link, sign in with your administrator account and press Accept?\n\n"
            f"{link}\n\nIt asks to read mail (Mail.Read), to send the emails I send from the CRM (Mail.Send), to read "
            "my basic profile (User.Read) and to stay signed in (offline_access). Thank you!")


@dataclass(frozen=True)
class ImportView:
    phase: str  # counting | estimated | importing | done | failed
    words: str
    value: int
    maximum: int
    running: bool


def _range(job: dict[str, Any]) -> str:
    return f"{job['since']:%-d %b %Y} to {job['until']:%-d %b %Y}"


def import_view(job: dict[str, Any]) -> ImportView:
    """A back-sync job (a `sync_jobs` row) as the page shows it: the estimate first (a dry run), then the
    import's progress."""
    seen, created = int(job["messages_seen"] or 0), int(job["engagements_created"] or 0)
    estimate = int(job["estimated_total"] or 0)
    running = job["status"] in ("queued", "running")
    maximum = max(estimate, seen, 1)
    if job["status"] == "failed":
        return ImportView("failed", f"The import from {_range(job)} stopped: {job['error'] or 'unknown error'}.",
                          seen, maximum, False)
    if job["dry_run"]:
        if running:
            return ImportView("counting", f"Counting the emails from {_range(job)}: {seen} so far"
                              + (f" of about {estimate}." if estimate > seen else "."), seen, maximum, True)
        contacts = job.get("estimated_with_contacts")
        with_contacts = f", {contacts} with your contacts" if contacts is not None else ""
        return ImportView("estimated", f"About {seen} email{'s' if seen != 1 else ''}{with_contacts}, from "
                          f"{_range(job)}. Only those with your clients' contacts are added to their timelines.",
                          seen, maximum, False)
    if running:
        return ImportView("importing", f"Importing {_range(job)}: {seen} of about {maximum} emails checked, "
                          f"{created} added to your clients' timelines.", seen, maximum, True)
    return ImportView("done", f"Done: {seen} emails from {_range(job)} checked, {created} added to your clients' "
                      "timelines.", seen, maximum, False)


# --- the organisation-wide (tenant) connection ------------------------------------------------------------

TENANT_STATUS_WORDS = {
    "pending_consent": ("Waiting for an administrator", "A Microsoft 365 administrator of your organisation must "
                        "open the consent link once; nobody's mailbox is read until then."),
    "connected": ("Connected", "Every directory user of this account whose mailbox is in this organisation is "
                  "synced without signing in; a password change never interrupts it."),
    "consent_revoked": ("Consent withdrawn", "An administrator withdrew mailsync's consent, so no mailbox is "
                        "read through the organisation. Create a new consent link and send it to an "
                        "administrator; mail of the gap is imported once they consent."),
    "disconnected": ("Disconnected", "The organisation-wide connection was removed; mailsync reads no mailbox "
                     "through it. Connect the organisation again below if you want it back."),
}


def tenant_words_to_send(link: str, tenant_id: str) -> str:
    """The message an account administrator sends their Microsoft 365 administrator with the consent link."""
    return ("Hello,\n\nWe use mailsync to keep our emails with clients on their CRM timelines. To sync our "
            "mailboxes without each person signing in (and without interruptions after password changes), "
            f"Microsoft 365 needs an administrator of our organisation ({tenant_id}) to approve mailsync once "
            "for the whole organisation.\n\nCould you open this link, sign in with your administrator account "
            f"and press Accept?\n\n{link}\n\nIt asks for the application permissions shown on the consent screen "
            "(reading mail and the directory's users). You can limit which mailboxes mailsync may read with an "
            "Exchange application access policy. The link works once and expires in 24 hours. Thank you!")


def tenant_todo(status: str, error_code: str | None) -> str | None:
    """What a mailbox synced through the organisation's connection needs, or None when it needs nothing."""
    if status == "connected":
        return None
    if error_code == "out_of_scope":
        return ("A Microsoft 365 administrator must add this mailbox to the organisation's application access "
                "policy; mailsync checks again every hour and imports the mail of the gap.")
    if status == "consent_required":
        return ("An administrator must consent again for the organisation (a new consent link on the Email "
                "connections page); mail of the gap is imported then.")
    return "Ask an administrator of your account."
