"""Graph-facing endpoints: the validation handshake, change and lifecycle notification intake.

Graph is answered 202 only after Kafka acknowledged every trusted notification (acks=all); when
Kafka did not, 503 makes Graph retry. Untrusted notifications are counted, never published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import asyncpg
from aiohttp import web
from prometheus_client import Counter, Histogram

from services.core.adapters.kafka import PublishError
from services.core.domain import events, json_limits
from services.core.domain.event_types import (
    ChangeType,
    Event,
    LifecycleKind,
    MessageChanged,
    SubscriptionLifecycle,
)
from services.subscriber.keys import PUBLISHER, TRUST
from services.subscriber.notifications import (
    BadPayload,
    ChangeNotification,
    LifecycleNotification,
    parse_change_notifications,
    parse_lifecycle_notifications,
)
from services.subscriber.trust import KnownSubscription, SubscriptionTrust

log = logging.getLogger(__name__)

# PostgreSQL unreachable or restarting: answered 503 (Graph retries), never 500.
STORE_DOWN = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError, asyncpg.InterfaceError,
              asyncpg.exceptions.AdminShutdownError, TimeoutError)

WEBHOOK_LATENCY = Histogram("mailsync_webhook_seconds", "Webhook answer time", ["endpoint"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
NOTIFICATIONS = Counter("mailsync_notifications_total", "Notifications by outcome", ["endpoint", "outcome"])


def _validation(request: web.Request) -> web.Response | None:
    token = request.query.get("validationToken")
    if token is None:
        return None
    # aiohttp already URL-decoded the query value; Graph wants it back verbatim as text/plain.
    return web.Response(text=token, content_type="text/plain")


async def _json_body(request: web.Request) -> Any:
    try:
        return json_limits.loads(await request.read())
    except json_limits.JsonRefused as exc:
        raise BadPayload(f"body refused: {exc}") from None


def _bad(message: str) -> web.Response:
    return web.json_response({"error": {"code": "bad_request", "message": message}}, status=400)


def _unavailable() -> web.Response:
    return web.json_response(
        {"error": {"code": "unavailable", "message": "notifications could not be stored; retry later"}},
        status=503, headers={"Retry-After": "5"})


Notification = ChangeNotification | LifecycleNotification


def _change_record(item: Notification, known: KnownSubscription) -> MessageChanged:
    assert isinstance(item, ChangeNotification)
    # Stable across Graph's redeliveries of the same change, so consumers can deduplicate.
    event_id = events.stable_event_id("message.changed", item.subscription_id, item.message_id,
                                      item.change_type, item.etag)
    # parse_change_notifications admits only the change types the model names (and the lifecycle events below).
    return MessageChanged(
        connection_id=known.connection_id, account_id=known.account_id, subscription_id=known.subscription_id,
        message_id=item.message_id, change_type=cast(ChangeType, item.change_type), source="webhook",
        event_id=event_id)


def _lifecycle_record(item: Notification, known: KnownSubscription) -> SubscriptionLifecycle:
    assert isinstance(item, LifecycleNotification)
    return SubscriptionLifecycle(
        connection_id=known.connection_id, account_id=known.account_id, subscription_id=item.subscription_id,
        lifecycle_event=cast(LifecycleKind, item.lifecycle_event))


async def _intake(request: web.Request, endpoint: str, parse: Callable[[Any], Sequence[Notification]],
                  topic: str, record: Callable[[Notification, KnownSubscription], Event]) -> web.Response:
    """Handshake, parse (400), trust (untrusted: counted, dropped), publish (202 only once Kafka acked)."""
    handshake = _validation(request)
    if handshake is not None:
        return handshake
    try:
        items = parse(await _json_body(request))
    except BadPayload as exc:
        NOTIFICATIONS.labels(endpoint, "bad_request").inc()
        return _bad(str(exc))
    trust: SubscriptionTrust = request.app[TRUST]
    try:
        trusted = [await trust.trusted(i.tenant_id, i.subscription_id, i.client_state) for i in items]
    except STORE_DOWN:
        # Cannot tell genuine from forged without the database: nothing is stored, so Graph must retry.
        NOTIFICATIONS.labels(endpoint, "unavailable").inc(len(items))
        return _unavailable()
    records: list[tuple[str, Event]] = []
    for item, known in zip(items, trusted, strict=True):
        if known is None:
            NOTIFICATIONS.labels(endpoint, "untrusted").inc()
            log.warning("untrusted notification ignored", extra={"subscription_id": item.subscription_id[:80]})
            continue
        if isinstance(item, LifecycleNotification) and item.lifecycle_event == "subscriptionRemoved":
            trust.forget(item.subscription_id)
        records.append((known.connection_id, record(item, known)))
    if records:
        try:
            await request.app[PUBLISHER].publish_many(topic, records)
        except PublishError as exc:
            NOTIFICATIONS.labels(endpoint, "unavailable").inc(len(records))
            log.error("notifications not acknowledged by Kafka", extra={"error": str(exc)})
            return _unavailable()
        NOTIFICATIONS.labels(endpoint, "published").inc(len(records))
    return web.Response(status=202)


async def handle_notifications(request: web.Request) -> web.Response:
    with WEBHOOK_LATENCY.labels("notifications").time():
        return await _intake(request, "notifications", parse_change_notifications, events.NOTIFICATIONS,
                             _change_record)


async def handle_lifecycle(request: web.Request) -> web.Response:
    with WEBHOOK_LATENCY.labels("lifecycle").time():
        return await _intake(request, "lifecycle", parse_lifecycle_notifications, events.LIFECYCLE,
                             _lifecycle_record)
