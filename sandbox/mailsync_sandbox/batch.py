"""JSON batching: `POST /v1.0/$batch` with at most 20 steps.

Each step goes through the same pipeline as a plain request, so each is throttled on its own: a
throttled step is an inner 429 with its own `Retry-After` inside the 200 envelope. At most 4 steps
per mailbox run at a time; `dependsOn` orders steps, and a step whose dependency failed is 424.
Responses come back in request order.

Both forms Microsoft documents for a throttled batch: by default `200` with inner `429`s; with the fault
`batch_424` the whole batch answers `424 Failed Dependency` when any step was throttled (throttling
guidance), with a `Retry-After` of the longest inner one, a Graph error body and the step `responses`.
Step headers are `Retry-After`/`Location`/`Content-Type` by default and lower case with the fault
`batch_lowercase_headers` (the JSON batching document's examples use `location`, `retry-after`): clients
must read them case-insensitively.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict
from yarl import URL

from mailsync_sandbox.graph_core import GraphCall, GraphResponse, authenticate, dispatch, graph_error
from mailsync_sandbox.paths import split_path
from mailsync_sandbox.state import Sandbox

MAX_STEPS = 20
PER_MAILBOX = 4
METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")


@dataclass
class Step:
    id: str
    method: str
    url: URL
    headers: CIMultiDict[str]
    body: Any
    depends_on: list[str]


def _bad(message: str) -> GraphResponse:
    return graph_error(400, "BadRequest", message)


def parse_steps(payload: Any) -> list[Step] | GraphResponse:
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list) or not requests:
        return _bad("Invalid batch payload format.")
    if len(requests) > MAX_STEPS:
        return _bad(f"Too many requests in batch: the limit is {MAX_STEPS}.")
    steps: list[Step] = []
    for raw in requests:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
            return _bad("Every batch request needs a string 'id'.")
        step_id, method, url = raw["id"], str(raw.get("method", "")).upper(), raw.get("url")
        if any(s.id == step_id for s in steps):
            return _bad(f"Batch request id '{step_id}' is used more than once.")
        if method not in METHODS:
            return _bad(f"Invalid method '{method}' in batch request '{step_id}'.")
        if not isinstance(url, str) or not url or url.lower().startswith(("http:", "https:")):
            return _bad(f"Batch request '{step_id}' needs a relative 'url'.")
        headers = raw.get("headers") or {}
        if not isinstance(headers, dict):
            return _bad(f"Headers of batch request '{step_id}' must be an object.")
        if raw.get("body") is not None and not any(k.lower() == "content-type" for k in headers):
            return _bad(f"Write request id : {step_id} does not contain Content-Type header or body.")
        depends = raw.get("dependsOn") or []
        if not isinstance(depends, list) or any(d not in {s.id for s in steps} for d in depends):
            return _bad(f"dependsOn of batch request '{step_id}' must name earlier requests.")
        steps.append(Step(step_id, method, URL("/" + url.lstrip("/")),
                          CIMultiDict({str(k): str(v) for k, v in headers.items()}), raw.get("body"), depends))
    return steps


def _mailbox_key(sb: Sandbox, segments: list[str], own_user: str) -> str:
    head = segments[0].lower() if segments else ""
    if head == "users" and len(segments) > 1:
        found = sb.mail.get(segments[1])
        return found.user_id if found is not None else segments[1].lower()
    return own_user


def _envelope(step: Step, response: GraphResponse, *, lower: bool) -> dict[str, Any]:
    headers = dict(response.headers)
    if response.body is not None:
        headers["Content-Type"] = "application/json; charset=utf-8"
    if lower:
        headers = {k.lower(): v for k, v in headers.items()}
    out: dict[str, Any] = {"id": step.id, "status": response.status, "headers": headers}
    if response.body is not None:
        out["body"] = response.body
    return out


async def run_batch(sb: Sandbox, payload: Any, headers: CIMultiDict[str], base_url: str) -> GraphResponse:
    token = authenticate(sb, headers)
    if isinstance(token, GraphResponse):
        return token
    steps = parse_steps(payload)
    if isinstance(steps, GraphResponse):
        return steps
    limits: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(PER_MAILBOX))
    results: dict[str, GraphResponse] = {}
    finished = {s.id: asyncio.Event() for s in steps}

    async def run(step: Step) -> None:
        try:
            for dependency in step.depends_on:
                await finished[dependency].wait()
            if any(results[d].status >= 400 for d in step.depends_on):
                results[step.id] = graph_error(424, "FailedDependency", "A request this one depends on failed.")
                return
            step_headers = CIMultiDict(step.headers)
            step_headers["Authorization"] = headers.get("Authorization", "")
            segments = split_path(step.url.raw_path)
            call = GraphCall(sb, step.method, segments, step.url.query, step_headers, step.body, base_url)
            async with limits[_mailbox_key(sb, segments, token.grant.user_id)]:
                results[step.id] = await dispatch(call)
        finally:
            finished[step.id].set()

    await asyncio.gather(*(run(s) for s in steps))
    lower = sb.faults.batch_lowercase_headers
    responses = [_envelope(s, results[s.id], lower=lower) for s in steps]
    throttled = [r for r in results.values() if r.status == 429]
    if throttled and sb.faults.batch_424:
        waits = [float(r.headers.get("Retry-After", "0") or 0) for r in throttled]
        retry_after = max(waits)
        header = str(int(retry_after)) if retry_after == int(retry_after) else f"{retry_after:g}"
        failed = graph_error(424, "FailedDependency", f"{len(throttled)} of the batch's requests were throttled: "
                             "retry the batch after Retry-After.", {"Retry-After": header})
        assert failed.body is not None
        failed.body["responses"] = responses
        return failed
    return GraphResponse(200, {"responses": responses})
