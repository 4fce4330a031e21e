"""Resolves a message's `parentFolderId` to a well-known folder name, per mailbox, cached.

Graph ids are opaque; asking `mailFolders/{wellKnownName}` once per mailbox gives each
well-known folder's id, so any other id is a user folder ("other").
"""

from __future__ import annotations

import asyncio

from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.errors import NotFound
from services.core.domain.matching import EXCLUDED_FOLDERS

# Every folder the matching rules name (excluded ones included: mail there must be known as such, not as
# "other"), plus the ones diagnose and the reasons name. One catalog: services.core.domain.matching.
WELL_KNOWN = tuple(sorted(EXCLUDED_FOLDERS | {"inbox", "sentitems", "archive", "scheduled", "clutter"}))


class FolderResolver:
    def __init__(self, graph: GraphClient) -> None:
        self._graph = graph
        self._by_mailbox: dict[str, dict[str, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def name_of(self, token: str, mailbox: str, folder_id: str) -> str:
        ids = self._by_mailbox.get(mailbox)
        if ids is None:
            lock = self._locks.setdefault(mailbox, asyncio.Lock())
            async with lock:
                ids = self._by_mailbox.get(mailbox)
                if ids is None:
                    ids = await self._load(token, mailbox)
                    self._by_mailbox[mailbox] = ids
        return ids.get(folder_id, "other")

    async def _load(self, token: str, mailbox: str) -> dict[str, str]:
        ids: dict[str, str] = {}
        for name in WELL_KNOWN:
            try:
                folder = await self._graph.get_folder(token, mailbox, name)
            except NotFound:
                continue
            ids[str(folder["id"])] = name
        return ids
