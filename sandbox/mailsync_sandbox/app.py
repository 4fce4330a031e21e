"""The sandbox as one aiohttp application: identity platform, Graph v1.0 and the control API."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from mailsync_sandbox import admin_consent, control, graph_send, identity
from mailsync_sandbox import delta as _delta  # noqa: F401 - registers Graph routes
from mailsync_sandbox import graph_folders as _folders  # noqa: F401
from mailsync_sandbox import graph_messages as _messages  # noqa: F401
from mailsync_sandbox import graph_subscriptions as _subscriptions  # noqa: F401
from mailsync_sandbox import graph_users as _users  # noqa: F401
from mailsync_sandbox.batch import run_batch
from mailsync_sandbox.graph_core import GRAPH_CONTENT_TYPE, GraphCall, GraphResponse, dispatch, graph_error
from mailsync_sandbox.paths import split_path
from mailsync_sandbox.state import SANDBOX, Sandbox


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _to_web(request: web.Request, response: GraphResponse) -> web.Response:
    request_id = str(uuid.uuid4())
    headers = {"request-id": request_id, "client-request-id": request.headers.get("client-request-id", request_id),
               **response.headers}
    if response.body is not None:
        headers["Content-Type"] = GRAPH_CONTENT_TYPE
    return web.Response(status=response.status, body=response.encode(), headers=headers)


async def graph(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    segments = split_path(request.raw_path)[1:]  # after "v1.0"
    body = None
    if request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                return _to_web(request, graph_error(400, "BadRequest", "Unable to read JSON request payload. "
                                                    "Please ensure Content-Type header is set and payload is of "
                                                    "valid JSON format."))
    if [s.lower() for s in segments] == ["$batch"]:
        if request.method != "POST":
            return _to_web(request, graph_error(405, "Request_BadRequest", "Use POST for $batch."))
        response = await run_batch(sb, body, CIMultiDict(request.headers), _base_url(request))
        return _to_web(request, response)
    call = GraphCall(sb, request.method, segments, request.query, request.headers, body, _base_url(request))
    return _to_web(request, await dispatch(call))


async def index(request: web.Request) -> web.Response:
    return web.json_response({"service": "mailsync Microsoft 365 sandbox", "graph": f"{_base_url(request)}/v1.0",
                              "login": _base_url(request), "control": f"{_base_url(request)}/sandbox"})


async def error_info(request: web.Request) -> web.Response:
    return web.Response(text=f"AADSTS{request.query.get('code', '')}: see the error_description of the response.")


def create_app(sandbox: Sandbox | None = None, *, ca_file: str | None = None) -> web.Application:
    """The application; `sandbox` lets a test keep a handle on the state. Notification receivers are
    verified against the system's CAs plus `ca_file` (the local stack's CA), as Graph verifies them."""
    app = web.Application(middlewares=[control.problems], client_max_size=16 * 1024 * 1024)
    sb = sandbox or Sandbox()
    app[SANDBOX] = sb

    async def outbound(app: web.Application) -> AsyncIterator[None]:
        verify = ssl.create_default_context()
        if ca_file:
            verify.load_verify_locations(cafile=ca_file)
        connector = aiohttp.TCPConnector(limit=200, limit_per_host=32, ssl=verify)
        async with aiohttp.ClientSession(connector=connector) as session:
            sb.notifier.session = session
            yield
            await sb.notifier.clear()
            sb.notifier.session = None

    app.cleanup_ctx.append(outbound)
    app.router.add_routes(control.routes)
    app.router.add_get("/", index)
    app.router.add_get("/error", error_info)
    for tenant_path in ("/{tenant}/oauth2/v2.0/authorize",):
        app.router.add_get(tenant_path, identity.authorize)
        app.router.add_post(tenant_path, identity.authorize)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", identity.token)
    app.router.add_get("/{tenant}/v2.0/adminconsent", admin_consent.admin_consent)
    app.router.add_post("/{tenant}/v2.0/adminconsent", admin_consent.admin_consent)
    app.router.add_post("/sandbox/send-faults", graph_send.set_send_faults)
    app.router.add_route("*", "/v1.0/{tail:.*}", graph)
    return app
