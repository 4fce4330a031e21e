"""Lifecycle events from Graph (via mailsync.lifecycle.v1)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from services.core.adapters.consuming import Record
from services.core.adapters.graph.errors import GraphError
from services.core.adapters.store.subscriptions import SubscriptionState as SubscriptionState  # re-exported
from services.core.application.connections import NotConnected
from services.core.domain.event_types import LIFECYCLE_EVENTS, SubscriptionLifecycle
from services.core.domain.events import BadEvent
from services.renewer.subscriptions import RENEW_LEASE, Ensure, Renew, RenewerDeps, ensure_one, renew_one

log = logging.getLogger(__name__)

# Our clock and Graph's may disagree a little (NTP keeps both within a second or so); an authorization that
# ends this close to the answer is treated as having lapsed. authorized_until is already on the early side:
# it is computed from `expires_in` on our clock when the token arrives. Kept small so a sped-up sandbox clock,
# where a token's remaining hour is a few real seconds, tells reminders in time from lapsed ones too.
CLOCK_SKEW = timedelta(seconds=5)


def may_have_missed(state: SubscriptionState, now: datetime) -> bool:
    """Pure: after answering a reauthorizationRequired, may change notifications have been lost?

    Graph keeps delivering to a subscription until the access token it holds expires; a reminder answered
    before then loses nothing, and a catch-up poll would only cost Graph requests (Microsoft sends these
    reminders repeatedly in a token's last hour: a poll each time would be one every 15-45 minutes per
    mailbox). Notifications may have been missed, and the mailbox gets a catch-up delta poll, exactly when
    delivery may have been paused:

    - the subscription itself had expired (`expires_at` <= now);
    - its authorization had lapsed: the token it held expired before this answer
      (`authorized_until` <= now + CLOCK_SKEW), so Graph paused delivery in between;
    - we do not know when its authorization ends (`authorized_until` unknown: created before it was
      recorded, or by a path that did not know its token's expiry);
    - an earlier PATCH of it failed since its last success (`reauth_failed_at` set): we cannot tell when
      Graph stopped waiting for an answer.

    Microsoft: ignored, delivery "eventually pauses" and the changes in the pause are lost
    (docs/graph.md#lifecycle); the sandbox drops notifications once the subscription's token has lapsed.
    A `missed` lifecycle event always gets a catch-up poll, and a `subscriptionRemoved` one after the
    subscription is recreated; neither goes through this function."""
    if state.expires_at <= now:
        return True
    if state.authorized_until is None or state.authorized_until <= now + CLOCK_SKEW:
        return True
    return state.reauth_failed_at is not None


async def handle_lifecycle(record: dict[str, Any] | SubscriptionLifecycle, deps: RenewerDeps, *,
                           renew: Renew = renew_one, ensure: Ensure = ensure_one) -> None:
    """No transaction is open across the Graph calls: renew_one runs under the subscription's renewal lease
    (claimed and released in their own statements), ensure_one under the mailbox's subscribe lock.
    Raises BadEvent for a malformed record; a type this version does not know is skipped."""
    event = LIFECYCLE_EVENTS.parse(record) if isinstance(record, dict) else record
    if event is None:
        return
    connection_id, subscription_id, kind = event.connection_id, event.subscription_id, event.lifecycle_event
    if kind == "reauthorizationRequired":
        before = await deps.subscriptions.renewal_state(subscription_id)
        if before is None:
            return  # not ours (any more); a mailbox left without a subscription is ensure_subscriptions' job
        # PATCH with a fresh token reauthorizes and renews in one call. A failure is recorded on the row
        # (the next reminder or renewal answers it, then catches up); a 404 recreates and catches up.
        # Under the renewal lease: a replica renewing it right now reauthorizes it with the same PATCH.
        if not await deps.subscriptions.claim_renewal(subscription_id, RENEW_LEASE):
            # That replica's PATCH answers this reminder too; whether mail may have been missed depends only
            # on the state before it, so the catch-up decision is still ours.
            if may_have_missed(before, datetime.now(UTC)):
                await _catch_up(deps, connection_id)
            return
        try:
            renewed = await renew(deps, subscription_id, connection_id)
        finally:
            await deps.subscriptions.release_renewal(subscription_id)
        if renewed and may_have_missed(before, datetime.now(UTC)):
            await _catch_up(deps, connection_id)
    elif kind == "subscriptionRemoved":
        # Outlook removes a user's subscriptions when the password is reset or the account disabled.
        # Recreating may then fail because the grant is revoked: the token service records one status
        # change (reconnect_required with the AADSTS reason) and raises NotConnected. Nothing retries:
        # ensure_subscriptions and the polls look at connected mailboxes only.
        await deps.subscriptions.forget(subscription_id)
        try:
            await ensure(deps, connection_id)
        except NotConnected as exc:
            log.info("subscription not recreated: mailbox not connected",
                     extra={"connection_id": connection_id, "status": exc.status})
            return
        except GraphError as exc:
            # A connected mailbox: ensure_subscriptions tries again on a later tick.
            log.warning("could not recreate subscription", extra={"connection_id": connection_id,
                                                                   "error_code": exc.classified.error_code})
        await _catch_up(deps, connection_id)
    else:  # missed
        await _catch_up(deps, connection_id)


async def _catch_up(deps: RenewerDeps, connection_id: str) -> None:
    """Mail that changed while push was paused or lost is found by a delta poll, run now."""
    await deps.connections.poll_now(connection_id, None)


class LifecycleBatch:
    def __init__(self, deps: RenewerDeps) -> None:
        self._deps = deps

    async def __call__(self, records: list[Record]) -> list[tuple[Record, str]]:
        poison = []
        for record in records:
            try:
                await handle_lifecycle(record.value, self._deps)
            except BadEvent as exc:
                poison.append((record, str(exc)))
        return poison
