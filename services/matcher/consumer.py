"""The matcher's two consumers: the CRM directory, and notifications in batches."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from services.core import engagements
from services.core.consuming import Record, gather_cancelling
from services.core.events import BadEvent
from services.core.graph.errors import GraphError
from services.core.kafka import Publisher
from services.core.observability import CORRELATION
from services.matcher.directory import DirectoryChange, apply_directory_event
from services.matcher.handler import Handled, MatcherDeps, Outcome, handle_message_changed
from services.matcher.rematch import Rematcher

log = logging.getLogger(__name__)

# Errors about a record's own data: deterministic, so retrying cannot help (DLQ instead).
RECORD_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
                  asyncpg.exceptions.ProgramLimitExceededError)


class DirectoryBatch:
    """Applies directory records; then re-matches the mail they concern (late contacts)."""

    def __init__(self, pool: asyncpg.Pool, rematcher: Rematcher) -> None:
        self._pool = pool
        self._rematcher = rematcher

    async def __call__(self, records: list[Record]) -> list[tuple[Record, str]]:
        poison: list[tuple[Record, str]] = []
        changes: list[DirectoryChange] = []
        async with self._pool.acquire() as conn:
            for record in records:
                try:
                    async with conn.transaction():
                        changes.append(await apply_directory_event(conn, record.value))
                except BadEvent as exc:
                    poison.append((record, str(exc)))
                except RECORD_REFUSED as exc:
                    # The database refuses this record's data (not a connection problem): retrying
                    # would stall the partition forever.
                    poison.append((record, f"refused by the database: {type(exc).__name__}"))
        for change in changes:
            await self._rematcher.apply(change)
        return poison


class NotificationBatch:
    """Handles a batch concurrently (Graph limits per mailbox apply), then publishes the feed events."""

    def __init__(self, deps: MatcherDeps, publisher: Publisher, *, concurrency: int = 16,
                 max_attempts: int = 8) -> None:
        self._deps = deps
        self._publisher = publisher
        self._limit = asyncio.Semaphore(concurrency)
        self._max_attempts = max_attempts
        self._failures: dict[tuple[str, int, int], int] = {}

    async def _one(self, record: Record) -> Handled | str:
        CORRELATION.set(f"{record.topic}/{record.partition}/{record.offset}")  # this task's log lines
        async with self._limit:
            if record.value.get("type") != "message.changed":
                return Handled(Outcome.SKIPPED)  # unknown types are skipped
            key = (record.topic, record.partition, record.offset)
            try:
                handled = await handle_message_changed(record.value, self._deps)
            except BadEvent as exc:
                return str(exc)
            except RECORD_REFUSED as exc:
                return f"refused by the database: {type(exc).__name__}"
            except GraphError as exc:
                # Transient (permanent ones are recorded by the handler): the batch is rewound. After
                # bounded retries the record goes to the DLQ, so one sick mailbox cannot stall its
                # partition forever; the hourly delta poll picks the message up again.
                self._failures[key] = self._failures.get(key, 0) + 1
                if self._failures[key] >= self._max_attempts:
                    del self._failures[key]
                    return f"gave up after {self._max_attempts} attempts: {exc}"
                raise
            self._failures.pop(key, None)
            return handled

    async def __call__(self, records: list[Record]) -> list[tuple[Record, str]]:
        results = await gather_cancelling(self._one(r) for r in records)
        poison = [(r, res) for r, res in zip(records, results, strict=True) if isinstance(res, str)]
        to_publish = sorted({res.engagement_id for res in results
                             if isinstance(res, Handled) and res.needs_publish and res.engagement_id})
        if to_publish:
            await engagements.publish_created(self._deps.pool, self._publisher, to_publish)
        synced = sorted({res.synced for res in results if isinstance(res, Handled) and res.synced})
        if synced:
            # Once per batch, not per message: a per-message update of the same row would serialise
            # every concurrent message of a mailbox on that row's lock.
            await self._deps.pool.execute(
                "UPDATE mailbox_connections SET last_synced_at = now() WHERE connection_id = ANY($1::uuid[])", synced)
        return poison
