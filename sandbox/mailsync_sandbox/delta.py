"""Delta query per mail folder: `GET /users/{id}/mailFolders/{folder}/messages/delta`.

The first request may carry `$select`, `$top`, `$filter=receivedDateTime ge|gt {t}` (then at most
the 5,000 newest), `$orderby=receivedDateTime desc` and `changeType=created|updated|deleted`; later
links carry them inside their token. Page size: `Prefer: odata.maxpagesize=N` (else `$top`, else 10).
Pages link on with `@odata.nextLink` (`$skiptoken`) until `@odata.deltaLink` (`$deltatoken`). A round
started from a deltaLink returns what changed since: created or updated messages, and
`{"id", "@removed": {"reason": "deleted"}}` for messages deleted or moved out.

Tokens are opaque (base64url JSON: mailbox, folder, change sequence numbers, paging key, options,
epoch). The fault `expire_delta_tokens` expires every token issued before it was set. Graph nests the
specific reason below a generic code (microsoft-graph-docs-contrib, delta-query-overview "synchronization
reset"; errors.md: "the innerError may contain a more specific code"), so the sandbox does too:
- an expired `$deltatoken`: `410 Gone`, a `Location` holding a fresh start URL, `error.code`
  `ErrorInvalidSyncState` and `error.innerError.code` `syncStateNotFound`;
- an expired `$skiptoken`: `400`, `error.code` `BadRequest`, `error.innerError.code` `syncStateNotFound`.
A token that does not decode, or belongs to another folder, is 400 `SyncStateInvalid` (not nested).
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, urlencode

from mailsync_sandbox.graph_core import GraphCall, GraphResponse, graph_error, route
from mailsync_sandbox.graph_folders import find_folder
from mailsync_sandbox.graph_messages import MESSAGE_FIELDS, message_json
from mailsync_sandbox.model import Folder, Mailbox, Message
from mailsync_sandbox.odata import ODataError, holds, max_page_size, parse_filter, parse_int, parse_select

OPTIONS = ("$select", "$top", "$filter", "$orderby", "changeType")
FILTER_CAP = 5000
DEFAULT_PAGE = 10
MESSAGE_TYPE = "#microsoft.graph.message"


def encode(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(token: str) -> dict[str, Any] | None:
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        return None
    required = ("u", "f", "e", "s", "t", "k", "o")
    return state if isinstance(state, dict) and all(k in state for k in required) else None


def _validate(opts: dict[str, str]) -> None:
    parse_select(opts, MESSAGE_FIELDS, "message")
    parse_int(opts, "$top", default=DEFAULT_PAGE, low=1, high=1000)
    if opts.get("$filter"):
        conditions = parse_filter(opts["$filter"], {"receivedDateTime": "datetime"})
        if any(c.op not in ("ge", "gt") for c in conditions):
            raise ODataError(400, "ErrorInvalidUrlQueryFilter",
                             "Delta query supports only receivedDateTime ge|gt in $filter.")
    if opts.get("$orderby") and " ".join(opts["$orderby"].split()).lower() != "receiveddatetime desc":
        raise ODataError(400, "BadRequest", "Delta query supports only $orderby=receivedDateTime desc.")
    if opts.get("changeType") and opts["changeType"] not in ("created", "updated", "deleted"):
        raise ODataError(400, "BadRequest", f"Invalid changeType '{opts['changeType']}'.")


def _base(call: GraphCall, mailbox: Mailbox, folder: Folder) -> str:
    return (f"{call.graph_base}/users/{quote(mailbox.user_id, safe='@')}/mailFolders/"
            f"{quote(folder.id, safe='')}/messages/delta")


@route("GET", "mailfolders/*/messages/delta", "mail")
async def delta(call: GraphCall) -> GraphResponse:
    mailbox = call.me()
    folder = find_folder(mailbox, call.args[0])
    if isinstance(folder, GraphResponse):
        return folder
    call.sb.stats.mailboxes[mailbox.user_id].delta_requests += 1
    faults = call.sb.faults
    skip, deltatoken = call.query.get("$skiptoken"), call.query.get("$deltatoken")
    if skip or deltatoken:
        state = decode(skip or deltatoken or "")
        if state is None or state["u"] != mailbox.user_id or state["f"] != folder.id:
            return graph_error(400, "SyncStateInvalid", "The sync state is invalid or belongs to another folder.")
        if faults.expire_delta_tokens and state["e"] < faults.delta_epoch:
            if deltatoken:
                fresh = _base(call, mailbox, folder) + (f"?{urlencode(state['o'], quote_via=quote, safe='$,')}"
                                                        if state["o"] else "")
                return graph_error(410, "ErrorInvalidSyncState", "The sync state generation is no longer available; "
                                   "restart the synchronization from the Location header.", {"Location": fresh},
                                   inner_code="syncStateNotFound")
            return graph_error(400, "BadRequest", "The sync state for this page is no longer available.",
                               inner_code="syncStateNotFound")
        if deltatoken:  # a new round: everything changed since the previous round's snapshot
            state = {**state, "t": mailbox.seq, "k": None}
    else:
        opts = {k: v for k, v in call.query.items() if k in OPTIONS}
        _validate(opts)
        state = {"u": mailbox.user_id, "f": folder.id, "e": faults.delta_epoch, "s": None, "t": mailbox.seq,
                 "k": None, "o": opts}
    return _page(call, mailbox, folder, state)


def _page(call: GraphCall, mailbox: Mailbox, folder: Folder, state: dict[str, Any]) -> GraphResponse:
    opts: dict[str, str] = state["o"]
    select = parse_select(opts, MESSAGE_FIELDS, "message")
    preferred = max_page_size(call.headers)
    size = preferred or parse_int(opts, "$top", default=DEFAULT_PAGE, low=1, high=1000)
    entries = _initial(mailbox, folder, state) if state["s"] is None else _changes(mailbox, folder, state)
    after = tuple(state["k"]) if state["k"] is not None else None
    remaining = [e for e in entries if after is None or (e[0], e[1]) > after]
    page, more = remaining[:size], len(remaining) > size
    value = []
    for _, message_id, message in page:
        if message is None:
            value.append({"@odata.type": MESSAGE_TYPE, "id": message_id, "@removed": {"reason": "deleted"}})
        else:
            value.append({"@odata.type": MESSAGE_TYPE, **message_json(message, select)})
    body: dict[str, Any] = {"@odata.context": f"{call.graph_base}/$metadata#Collection(message)", "value": value}
    epoch = call.sb.faults.delta_epoch
    if more:
        last = page[-1]
        body["@odata.nextLink"] = (f"{_base(call, mailbox, folder)}?$skiptoken="
                                   f"{encode({**state, 'e': epoch, 'k': [last[0], last[1]]})}")
    else:
        next_round = {**state, "e": epoch, "s": state["t"], "k": None}
        body["@odata.deltaLink"] = f"{_base(call, mailbox, folder)}?$deltatoken={encode(next_round)}"
    headers = {"Preference-Applied": f"odata.maxpagesize={preferred}"} if preferred else {}
    return GraphResponse(200, body, headers)


Entry = tuple[Any, str, Message | None]


def _initial(mailbox: Mailbox, folder: Folder, state: dict[str, Any]) -> list[Entry]:
    """The folder as of the snapshot, newest first; key (-received, id)."""
    opts = state["o"]
    if opts.get("changeType") in ("updated", "deleted"):
        return []
    conditions = parse_filter(opts["$filter"], {"receivedDateTime": "datetime"}) if opts.get("$filter") else []
    chosen = [m for m in mailbox.messages.values()
              if m.folder_id == folder.id and m.entered_seq <= state["t"]
              and all(holds(c, m.received) for c in conditions)]
    entries: list[Entry] = sorted(((-m.received.timestamp(), m.id, m) for m in chosen), key=lambda e: (e[0], e[1]))
    return entries[:FILTER_CAP] if conditions else entries


def _changes(mailbox: Mailbox, folder: Folder, state: dict[str, Any]) -> list[Entry]:
    """What changed in (since, until]: key (seq, id)."""
    since, until, wanted = state["s"], state["t"], state["o"].get("changeType")
    entries: list[Entry] = []
    inside = set()
    for message in mailbox.messages.values():
        if message.folder_id != folder.id:
            continue
        inside.add(message.id)
        if since < message.seq <= until:
            kind = "created" if message.entered_seq > since else "updated"
            if wanted in (None, kind):
                entries.append((message.seq, message.id, message))
    if wanted in (None, "deleted"):
        for message_id, seq in mailbox.tombstones.get(folder.id, {}).items():
            if since < seq <= until and message_id not in inside:
                entries.append((seq, message_id, None))
    entries.sort(key=lambda e: (e[0], e[1]))
    return entries
