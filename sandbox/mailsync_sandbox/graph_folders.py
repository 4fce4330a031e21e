"""Graph mail folders: list (top level or children), one folder by id or well-known name.

`wellKnownName` is a beta property; v1.0 does not return it unless `$select`ed here (the sandbox is
lenient there, so tests can see which folder is which). Page size: `$top` (default 10), `$skip` links.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from mailsync_sandbox.graph_core import GraphCall, GraphResponse, graph_error, route
from mailsync_sandbox.model import FOLDER_ID_PREFIX, OTHER_WELL_KNOWN, Folder, Mailbox, looks_like_id
from mailsync_sandbox.odata import max_page_size, parse_int, parse_select

FOLDER_FIELDS = ("id", "displayName", "parentFolderId", "childFolderCount", "unreadItemCount", "totalItemCount",
                 "sizeInBytes", "isHidden", "wellKnownName")
DEFAULT_FIELDS = tuple(f for f in FOLDER_FIELDS if f != "wellKnownName")


def find_folder(mailbox: Mailbox, ref: str) -> Folder | GraphResponse:
    found = mailbox.resolve_folder(ref)
    if found is not None:
        return found
    if ref.lower() in OTHER_WELL_KNOWN:
        return graph_error(404, "ErrorFolderNotFound", "The specified folder could not be found in the store.")
    if looks_like_id(ref, FOLDER_ID_PREFIX):
        return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return graph_error(400, "ErrorInvalidIdMalformed", "Id is malformed.")


def folder_json(mailbox: Mailbox, folder: Folder, select: list[str] | None) -> dict[str, Any]:
    total, unread = mailbox.count_in(folder.id)
    values: dict[str, Any] = {
        "id": folder.id, "displayName": folder.display_name, "parentFolderId": folder.parent_id or None,
        "childFolderCount": len(mailbox.children(folder.id)), "unreadItemCount": unread, "totalItemCount": total,
        "sizeInBytes": total * 2048, "isHidden": folder.hidden, "wellKnownName": folder.well_known,
    }
    fields = select if select is not None else list(DEFAULT_FIELDS)
    return {"id": folder.id, **{f: values[f] for f in fields if f != "id"}}


@route("GET", "mailfolders/*", "mail")
async def get_folder(call: GraphCall) -> GraphResponse:
    mailbox = call.me()
    select = parse_select(call.query, FOLDER_FIELDS, "mailFolder")
    folder = find_folder(mailbox, call.args[0])
    if isinstance(folder, GraphResponse):
        return folder
    context = f"{call.graph_base}/$metadata#users('{quote(mailbox.user_id)}')/mailFolders/$entity"
    return GraphResponse(200, {"@odata.context": context, **folder_json(mailbox, folder, select)})


@route("GET", "mailfolders", "mail")
async def list_folders(call: GraphCall) -> GraphResponse:
    mailbox = call.me()
    return _list(call, mailbox.children(mailbox.root_id), "mailFolders")


@route("GET", "mailfolders/*/childfolders", "mail")
async def list_child_folders(call: GraphCall) -> GraphResponse:
    mailbox = call.me()
    parent = find_folder(mailbox, call.args[0])
    if isinstance(parent, GraphResponse):
        return parent
    return _list(call, mailbox.children(parent.id), f"mailFolders/{quote(parent.id, safe='')}/childFolders")


def _list(call: GraphCall, folders: list[Folder], tail: str) -> GraphResponse:
    mailbox, query = call.me(), call.query
    select = parse_select(query, FOLDER_FIELDS, "mailFolder")
    top = parse_int(query, "$top", default=10, low=1, high=1000)
    skip = parse_int(query, "$skip", default=0)
    page = min(top, max_page_size(call.headers) or top)
    body: dict[str, Any] = {
        "@odata.context": f"{call.graph_base}/$metadata#users('{quote(mailbox.user_id)}')/{tail}",
        "value": [folder_json(mailbox, f, select) for f in folders[skip:skip + page]],
    }
    if skip + page < len(folders):
        params = {k: v for k, v in query.items() if k != "$skip"}
        params["$skip"] = str(skip + page)
        body["@odata.nextLink"] = (f"{call.graph_base}/users/{quote(mailbox.user_id, safe='@')}/{tail}?"
                                   f"{urlencode(params, safe='$,()', quote_via=quote)}")
    return GraphResponse(200, body)
