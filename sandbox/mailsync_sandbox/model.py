"""The sandbox's mail data: addresses, folders, messages and mailboxes, with Graph-looking opaque ids.

Ids imitate Exchange's: base64url text that may end in `=` (so clients must URL-encode them).
Message ids are immutable (what `Prefer: IdType="ImmutableId"` gives on Graph): a move keeps the id.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import getaddresses
from typing import Any

# Folders every mailbox has (well-known name -> display name), all children of the root.
DEFAULT_FOLDERS: dict[str, str] = {
    "inbox": "Inbox",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "outbox": "Outbox",
    "archive": "Archive",
    "conversationhistory": "Conversation History",
}
ROOT_NAME = "msgfolderroot"
# Well-known names Graph accepts that a sandbox mailbox does not have (404 ErrorFolderNotFound).
OTHER_WELL_KNOWN = frozenset({
    "clutter", "conflicts", "conversationhistory", "localfailures", "serverfailures", "scheduled", "searchfolders",
    "syncissues",
    "recoverableitemsdeletions", "recoverableitemsroot", "recoverableitemspurges", "recoverableitemsversions",
    "archivemsgfolderroot", "archiveinbox", "archivedeleteditems", "archiverecoverableitemsroot",
})
OUTGOING = frozenset({"sentitems", "drafts", "outbox"})
MESSAGE_ID_PREFIX = "AAkALg"
FOLDER_ID_PREFIX = "AAMkAD"


def _opaque(prefix: str, size: int) -> str:
    return prefix + base64.urlsafe_b64encode(os.urandom(size)).decode()


def new_message_id() -> str:
    return _opaque(MESSAGE_ID_PREFIX, 40)  # 40 bytes: the text ends in "=="


def new_folder_id() -> str:
    return _opaque(FOLDER_ID_PREFIX, 33) + "AAA="


def looks_like_id(value: str, prefix: str) -> bool:
    return value.startswith(prefix) and len(value) > len(prefix) + 20


@dataclass(frozen=True)
class Address:
    name: str
    address: str

    def graph(self) -> dict[str, Any]:
        return {"emailAddress": {"name": self.name or self.address, "address": self.address}}

    def header(self) -> str:
        return f'"{self.name}" <{self.address}>' if self.name and self.name != self.address else self.address


def parse_address(value: Any) -> Address:
    """`"a@x"`, `"Name <a@x>"`, `{"name","address"}` or `{"emailAddress": {...}}`; ValueError otherwise."""
    if isinstance(value, dict):
        inner = value.get("emailAddress", value)
        if not isinstance(inner, dict):
            raise ValueError("an address object needs 'address'")
        address, name = inner.get("address"), inner.get("name") or ""
        if not isinstance(address, str) or "@" not in address or not isinstance(name, str):
            raise ValueError(f"not an email address: {value!r:.80}")
        return Address(name=name.strip(), address=address.strip())
    if isinstance(value, str):
        parsed = getaddresses([value])
        if len(parsed) == 1 and "@" in parsed[0][1]:
            return Address(name=parsed[0][0].strip(), address=parsed[0][1].strip())
    raise ValueError(f"not an email address: {value!r:.80}")


def parse_addresses(value: Any, key: str) -> list[Address]:
    if value is None:
        return []
    if not isinstance(value, list):
        value = [value]
    try:
        return [parse_address(v) for v in value]
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


@dataclass
class Folder:
    id: str
    display_name: str
    parent_id: str
    well_known: str | None = None
    hidden: bool = False


@dataclass
class Message:
    id: str
    folder_id: str
    subject: str
    body: str
    body_type: str
    from_: Address | None
    sender: Address | None
    to: list[Address]
    cc: list[Address]
    bcc: list[Address]
    reply_to: list[Address]
    received: datetime
    sent: datetime
    created: datetime
    modified: datetime
    internet_message_id: str
    conversation_id: str
    is_draft: bool
    is_read: bool
    extra_headers: list[tuple[str, str]]
    seq: int = 0  # the mailbox's change sequence number of the last change
    entered_seq: int = 0  # ... when it entered its current folder
    version: int = 1
    # singleValueExtendedProperties set on create (id -> value), as Graph keeps them on the item
    extended_properties: dict[str, str] = field(default_factory=dict)

    @property
    def change_key(self) -> str:
        digest = hashlib.sha256(f"{self.id}:{self.version}".encode()).digest()[:16]
        return "CQAAABYAAA" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def etag(self) -> str:
        return f'W/"{self.change_key}"'


def conversation_id_for(user_id: str, subject: str) -> str:
    """Replies share a conversation: the id derives from the subject without Re:/Fw: prefixes."""
    text = subject.strip()
    while True:
        lowered = text.lower()
        for prefix in ("re:", "fw:", "fwd:", "aw:", "wg:"):
            if lowered.startswith(prefix):
                text = text[len(prefix):].strip()
                break
        else:
            break
    digest = hashlib.sha256(f"{user_id}\0{text.lower()}".encode()).digest()[:30]
    return "AAQkAD" + base64.urlsafe_b64encode(digest).decode()


@dataclass
class Mailbox:
    user_id: str
    tenant_id: str
    address: str
    aliases: list[str]
    display_name: str
    auto_consent: bool
    folders: dict[str, Folder] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    # folder id -> message id -> seq at which the message left that folder (moved out or deleted)
    tombstones: dict[str, dict[str, int]] = field(default_factory=dict)
    seq: int = 0
    root_id: str = ""
    # (sandbox time, recipients) of each message this mailbox sent: Exchange's sending limits (graph_send.py)
    sent_log: list[tuple[float, int]] = field(default_factory=list)
    shared: bool = False  # a shared mailbox: no sign-in, reachable with application permissions only

    def __post_init__(self) -> None:
        if not self.folders:
            root = Folder(new_folder_id(), "Top of Information Store", "", ROOT_NAME, hidden=True)
            self.root_id = root.id
            self.folders[root.id] = root
            for name, display in DEFAULT_FOLDERS.items():
                folder = Folder(new_folder_id(), display, root.id, name)
                self.folders[folder.id] = folder

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def addresses(self) -> list[str]:
        return [self.address, *self.aliases]

    def owns(self, address: str) -> bool:
        return address.lower() in {a.lower() for a in self.addresses()}

    def well_known(self, name: str) -> Folder | None:
        wanted = name.lower()
        return next((f for f in self.folders.values() if f.well_known == wanted), None)

    def resolve_folder(self, ref: str) -> Folder | None:
        """A folder id or a well-known name (case-insensitive)."""
        return self.folders.get(ref) or self.well_known(ref)

    def children(self, folder_id: str) -> list[Folder]:
        return sorted((f for f in self.folders.values() if f.parent_id == folder_id and not f.hidden),
                      key=lambda f: f.display_name.lower())

    def folder_for_delivery(self, ref: str) -> Folder:
        """A well-known name, a folder id, or a path of display names ("Clients/Acme"), created on the fly."""
        found = self.resolve_folder(ref)
        if found is not None:
            return found
        parent = self.root_id
        folder: Folder | None = None
        for part in (p.strip() for p in ref.split("/")):
            if not part:
                raise ValueError(f"bad folder path {ref!r:.100}")
            folder = next((f for f in self.folders.values()
                           if f.parent_id == parent and f.display_name.lower() == part.lower()), None)
            if folder is None:
                folder = Folder(new_folder_id(), part, parent)
                self.folders[folder.id] = folder
            parent = folder.id
        if folder is None:
            raise ValueError("folder is empty")
        return folder

    def count_in(self, folder_id: str) -> tuple[int, int]:
        """(total, unread) messages in one folder."""
        inside = [m for m in self.messages.values() if m.folder_id == folder_id]
        return len(inside), sum(1 for m in inside if not m.is_read)
