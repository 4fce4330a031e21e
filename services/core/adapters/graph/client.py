"""A thin Graph client on a shared aiohttp session: at most N requests in flight per mailbox,
transient failures retried with jittered exponential back-off that honours `Retry-After`.

The msgraph SDK costs ~10 ms of CPU per GET (docs/graph.md#sdk); this hot path uses plain aiohttp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tenacity.wait import wait_base

from services.core.adapters import txguard
from services.core.adapters.graph.claims import parse_claims_challenge
from services.core.adapters.graph.errors import (
    AccessTokenRejected,
    Classified,
    DeltaExpired,
    GraphError,
    NotFound,
    Severity,
    classify_graph_response,
    header,
    is_sync_state_lost_body,
    retry_after_seconds,
)
from services.core.adapters.graph.limiter import MailboxLimiter
from services.core.domain import json_limits

MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # a page of 1,000 messages with headers stays well below
GRAPH_REQUESTS = Counter("mailsync_graph_requests_total", "Graph requests by status", ["status"])
GRAPH_THROTTLED = Counter("mailsync_graph_throttled_total", "Graph 429 answers")

MESSAGE_FIELDS = (
    "id,internetMessageId,conversationId,subject,isDraft,parentFolderId,receivedDateTime,sentDateTime,"
    "from,sender,toRecipients,ccRecipients,bccRecipients,replyTo"
)


class _WaitRetryAfter(wait_base):
    """Wait what the server asked for (plus jitter), else exponential back-off."""

    def __init__(self) -> None:
        self._fallback = wait_exponential_jitter(initial=0.2, max=20, jitter=0.5)

    def __call__(self, retry_state: Any) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, GraphError) and exc.retry_after is not None:
            return 0.0  # the per-mailbox gate in GraphClient holds the request until Retry-After
        return float(self._fallback(retry_state))


def same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme.lower(), a.hostname, a.port) == (b.scheme.lower(), b.hostname, b.port) and not a.username \
        and a.path.startswith(b.path.rstrip("/") + "/")


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, GraphError) and exc.transient


class GraphClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        per_mailbox: int = 4,
        budget_per_10min: int = 2000,
        attempts: int = 8,
        timeout_s: float = 20.0,
        sequential_batches: bool = False,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._limits = MailboxLimiter(per_mailbox, budget_per_10min=budget_per_10min)
        self._attempts = attempts
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        # Graph runs up to 4 steps of a $batch at once, and they count toward the mailbox's 4: a client
        # allowed one request in flight chains its steps with dependsOn so they run one at a time.
        self._sequential_batches = sequential_batches

    async def request(
        self,
        method: str,
        path: str,
        token: str,
        *,
        mailbox: str,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        url = self._absolute(path)
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            wait=_WaitRetryAfter(),
            stop=stop_after_attempt(attempts or self._attempts),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(method, url, token, mailbox, params, json, headers)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(
        self,
        method: str,
        url: str,
        token: str,
        mailbox: str,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
        headers: dict[str, str] | None,
    ) -> dict[str, Any]:
        txguard.check(f"Graph {method} {urlsplit(url).path}")
        all_headers = {"Authorization": f"Bearer {token}", "Prefer": 'IdType="ImmutableId"'}
        all_headers.update(headers or {})
        async with self._limits.slot(mailbox):
            try:
                async with self._session.request(
                    method, url, params=params, json=body, headers=all_headers, timeout=self._timeout
                ) as resp:
                    GRAPH_REQUESTS.labels(str(resp.status)).inc()
                    if resp.status == 204:
                        return {}
                    payload = await _json_or_none(resp)
                    if resp.status < 300:
                        return payload or {}
                    retry_after = retry_after_seconds(resp.headers)
                    if resp.status == 429:
                        GRAPH_THROTTLED.inc()
                        self._limits.throttled(mailbox, retry_after)
                    challenge = ", ".join(resp.headers.getall("WWW-Authenticate", [])) or None
                    raise error_for(resp.status, payload, resp.headers, challenge)
            except (aiohttp.ClientError, TimeoutError) as exc:
                GRAPH_REQUESTS.labels("network_error").inc()
                raise GraphError(
                    Classified(Severity.TRANSIENT, "network_error", f"{type(exc).__name__}"), None
                ) from exc

    # --- the calls the services make -------------------------------------------------------

    async def get_message(self, token: str, user: str, message_id: str) -> dict[str, Any]:
        path = f"/users/{quote(user, safe='@')}/messages/{quote(message_id, safe='')}"
        return await self.request("GET", path, token, mailbox=user, params={"$select": MESSAGE_FIELDS})

    async def get_folder(self, token: str, user: str, folder: str) -> dict[str, Any]:
        path = f"/users/{quote(user, safe='@')}/mailFolders/{quote(folder, safe='')}"
        return await self.request("GET", path, token, mailbox=user, params={"$select": "id,displayName"})

    async def get_page(self, token: str, user: str, url: str, *, page_size: int = 50) -> dict[str, Any]:
        """One page of a list or delta query, from a nextLink/deltaLink or a first URL (query inline)."""
        return await self.request("GET", url, token, mailbox=user,
                                  headers={"Prefer": f'odata.maxpagesize={page_size}, IdType="ImmutableId"'})

    async def batch_get(self, token: str, user: str, urls: list[str], *, page_size: int = 50,
                        attempts: int = 6) -> list[dict[str, Any] | GraphError]:
        """GET up to 20 URLs of one mailbox in one JSON `$batch`. Graph throttles each step on its own and
        the SDKs do not retry inner failures: retried here after the longest inner Retry-After. A whole
        batch refused with `424` or `429` (Microsoft documents both for throttled batches) is not a
        failure of its steps: every step is retried after the longest Retry-After, within the same budget.
        Returns, per URL, the body or the error its step ended with."""
        if len(urls) > 20:
            raise ValueError("a $batch holds at most 20 requests")
        results: list[dict[str, Any] | GraphError | None] = [None] * len(urls)
        pending = list(range(len(urls)))
        prefer = f'odata.maxpagesize={page_size}, IdType="ImmutableId"'
        stalled = 0  # rounds in a row in which no step completed: the retry budget
        while pending:
            body = {"requests": batch_steps([self._relative(urls[i]) for i in pending], pending, prefer,
                                            sequential=self._sequential_batches)}
            last_round = stalled >= attempts - 1
            try:
                # One attempt: a refused envelope is retried below, per step, not as a whole by request().
                envelope = await self.request("POST", "/$batch", token, mailbox=user, json=body, attempts=1)
                round_ = read_batch_round(pending, envelope.get("responses"), last_round=last_round)
            except GraphError as exc:
                if not (exc.transient or whole_batch_refused(exc.status)):
                    raise
                round_ = read_batch_round(pending, (exc.body or {}).get("responses"), last_round=last_round,
                                          envelope_retry_after=exc.retry_after)
            for i, result in round_.done.items():
                results[i] = result
            before = len(pending)
            pending = round_.retry
            stalled = stalled + 1 if len(pending) == before else 0
            if pending:
                self._limits.throttled(user, round_.wait if round_.wait is not None else 0.5 * 2 ** stalled)
        return [r if r is not None else _exhausted() for r in results]

    def _absolute(self, path: str) -> str:
        """A path under the base URL, or an absolute link Graph gave us (nextLink, deltaLink). The bearer
        token goes only to Graph's own origin: a link naming any other host is refused, never followed."""
        if "://" not in path:
            return f"{self._base}{path}"
        if not same_origin(path, self._base):
            raise GraphError(Classified(Severity.PERMANENT, "foreign_link",
                                        "Graph returned a link to another host; it was not followed."), None)
        return path

    def _relative(self, url: str) -> str:
        """$batch steps are relative to the API version: `/users/...`, not the absolute link."""
        return url[len(self._base):] if url.startswith(self._base) else url

    async def list_folders(self, token: str, user: str) -> list[dict[str, Any]]:
        """Every mail folder, child folders included (inbox rules file mail into nested folders)."""
        found: list[dict[str, Any]] = []
        pending = [f"/users/{quote(user, safe='@')}/mailFolders"]
        while pending and len(found) < 5000:
            url: str | None = pending.pop() + "?$top=250&$select=id,displayName,childFolderCount"
            while url:
                page = await self.get_page(token, user, url, page_size=250)
                for folder in page.get("value", []):
                    found.append(folder)
                    if folder.get("childFolderCount"):
                        pending.append(f"/users/{quote(user, safe='@')}/mailFolders/{quote(folder['id'], safe='')}"
                                       "/childFolders")
                url = page.get("@odata.nextLink")
        return found

    async def get_me(self, token: str) -> dict[str, Any]:
        return await self.request(
            "GET", "/me", token, mailbox="me",
            params={"$select": "id,displayName,mail,userPrincipalName,proxyAddresses"},
        )

    async def create_subscription(self, token: str, user: str, body: dict[str, Any]) -> dict[str, Any]:
        """One attempt only: a POST that timed out may have created the subscription at Graph, so the
        caller looks for it before trying again (core.subscriptions)."""
        return await self.request("POST", "/subscriptions", token, mailbox=user, json=body, attempts=1)

    async def list_subscriptions(self, token: str, user: str) -> list[dict[str, Any]]:
        """The subscriptions this app holds for the signed-in user (Graph lists only the caller's own)."""
        page = await self.request("GET", "/subscriptions", token, mailbox=user)
        return [s for s in page.get("value", []) if isinstance(s, dict)]

    async def renew_subscription(
        self, token: str, user: str, subscription_id: str, expires: str
    ) -> dict[str, Any]:
        path = f"/subscriptions/{quote(subscription_id, safe='')}"
        return await self.request("PATCH", path, token, mailbox=user, json={"expirationDateTime": expires})

    async def delete_subscription(self, token: str, user: str, subscription_id: str) -> None:
        path = f"/subscriptions/{quote(subscription_id, safe='')}"
        await self.request("DELETE", path, token, mailbox=user)


def error_for(status: int, payload: Mapping[str, Any] | None, headers: Mapping[str, str],
              www_authenticate: str | None) -> GraphError:
    """The exception for a Graph error answer (a whole response or one $batch step). Headers are read
    case-insensitively: steps may carry `retry-after`, `location` in lower case."""
    classified = classify_graph_response(status, payload, www_authenticate)
    if is_sync_state_lost_body(status, payload):
        return DeltaExpired(classified, status, header(headers, "Location"))
    if status == 404:
        return NotFound(classified, status)
    if status == 401 or (status == 403 and classified.error_code == "conditional_access"):
        return AccessTokenRejected(classified, status, parse_claims_challenge(www_authenticate))
    return GraphError(classified, status, retry_after_seconds(headers),
                      body=payload if whole_batch_refused(status) else None)


def whole_batch_refused(status: int | None) -> bool:
    """A `$batch` envelope (or a step) refused for throttling: 429, or 424 Failed Dependency."""
    return status in (424, 429)


@dataclass
class BatchRound:
    """What one `$batch` answer means for the pending steps: the ones finished (a body or their final
    error), the ones to send again, and how long to wait first (the longest Retry-After seen)."""

    done: dict[int, dict[str, Any] | GraphError] = field(default_factory=dict)
    retry: list[int] = field(default_factory=list)
    wait: float | None = None


def batch_steps(urls: list[str], ids: list[int], prefer: str, *, sequential: bool) -> list[dict[str, Any]]:
    """Pure. The `requests` of a GET $batch; `sequential` chains each step on the one before (dependsOn),
    so Graph runs them one at a time (a step after a failed one answers 424 and is retried next round)."""
    steps: list[dict[str, Any]] = []
    for n, (url, i) in enumerate(zip(urls, ids, strict=True)):
        step: dict[str, Any] = {"id": str(i), "method": "GET", "url": url, "headers": {"Prefer": prefer}}
        if sequential and n:
            step["dependsOn"] = [str(ids[n - 1])]
        steps.append(step)
    return steps


def read_batch_round(pending: list[int], responses: Any, *, last_round: bool,
                     envelope_retry_after: float | None = None) -> BatchRound:
    """Pure. `responses` is the envelope's `responses` array (or None when the whole batch was refused).
    A step not answered, or answered with a transient error (429, 424 because a throttled step failed
    before it, 5xx) is retried; on the last round it ends with that error (unanswered: `batch_exhausted`).
    Any other step is finished."""
    round_ = BatchRound(wait=envelope_retry_after)
    answered: set[int] = set()
    for step in responses if isinstance(responses, list) else []:
        if not isinstance(step, dict):
            continue
        try:
            i = int(step.get("id", -1))
            status = int(step.get("status", 500))
        except (TypeError, ValueError):
            continue
        if i not in pending or i in answered:
            continue
        answered.add(i)
        payload = step.get("body") if isinstance(step.get("body"), dict) else None
        raw_headers = step.get("headers")
        headers = {str(k): str(v) for k, v in raw_headers.items()} if isinstance(raw_headers, dict) else {}
        if status < 300:
            round_.done[i] = payload or {}
            continue
        error = error_for(status, payload, headers, header(headers, "WWW-Authenticate"))
        if (error.transient or whole_batch_refused(status)) and not last_round:
            round_.retry.append(i)
            if error.retry_after is not None:
                round_.wait = max(round_.wait or 0.0, error.retry_after)
        else:
            round_.done[i] = error
    unanswered = [i for i in pending if i not in answered]
    if last_round:
        round_.done.update((i, _exhausted()) for i in unanswered)
    else:
        round_.retry = sorted(set(round_.retry) | set(unanswered))
    return round_


def _exhausted() -> GraphError:
    return GraphError(Classified(Severity.TRANSIENT, "batch_exhausted", "Graph kept refusing a batch step."))


async def _json_or_none(resp: aiohttp.ClientResponse) -> dict[str, Any] | None:
    try:
        value = json_limits.loads(await resp.read(), max_bytes=MAX_RESPONSE_BYTES, lone_surrogates="replace")
    except json_limits.JsonRefused:
        return None
    return value if isinstance(value, dict) else None
