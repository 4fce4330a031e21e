"""Graph paths: segments decoded one by one, `name('key')` turned into `name`, `key`."""

from __future__ import annotations

import re
from urllib.parse import unquote

_KEYED = re.compile(r"^([A-Za-z$][\w.$]*)\((?:'(.*)'|(.*))\)$", re.DOTALL)


def split_path(raw: str) -> list[str]:
    """`/users/a%40b/mailFolders('Inbox')/messages` -> ["users", "a@b", "mailFolders", "Inbox", "messages"]."""
    out: list[str] = []
    for part in raw.split("?", 1)[0].split("/"):
        if not part:
            continue
        text = unquote(part)
        keyed = _KEYED.match(text)
        if keyed:
            out.append(keyed.group(1))
            out.append((keyed.group(2) if keyed.group(2) is not None else keyed.group(3)).replace("''", "'"))
        else:
            out.append(text)
    return out


def lower_names(segments: list[str], positions: tuple[int, ...]) -> list[str]:
    """The segments at `positions` are names (case-insensitive in Graph): lower-cased copies."""
    return [s.lower() if i in positions else s for i, s in enumerate(segments)]
