"""The matcher's two consumers: the CRM directory, and notifications in batches."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from services.core.adapters.consuming import Record
from services.core.adapters.graph.errors import GraphError
from services.core.adapters.kafka import Publisher
from services.core.adapters.observability import CORRELATION
from services.core.adapters.store.jobs import SyncJobs
from services.core.adapters.store.mailbox.owners import MatcherMarks
from services.core.application import outbox
from services.core.application.matching import decide_and_store
from services.core.domain.events import BadEvent
from services.core.domain.model import Decision
from services.matcher.directory import DirectoryChange, apply_directory_event
from services.matcher.handler import (
    DECISIONS,
    ENGAGEMENTS_CREATED,
    BatchView,
    Fetched,
    Handled,
    MatcherDeps,
    Outcome,
    connection_ids,
    handle_message_changed,
    load_mailboxes,
    to_decide,
)
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
    """Handles a batch: its mailboxes read once, the messages fetched concurrently (Graph limits per mailbox
    apply), decided and stored a few at a time as they arrive (one directory read and one transaction per
    group, the feed events written to the outbox in it and published after its commit; what cannot be
    published then is left to the outbox relay)."""

    def __init__(self, deps: MatcherDeps, publisher: Publisher, *, concurrency: int = 16,
                 max_attempts: int = 8) -> None:
        self._deps = deps
        self._publisher = publisher
        self._limit = asyncio.Semaphore(concurrency)
        self._max_attempts = max_attempts
        self._failures: dict[tuple[str, int, int], int] = {}

    async def _one(self, record: Record, batch: BatchView) -> Handled | Fetched | str:
        CORRELATION.set(f"{record.topic}/{record.partition}/{record.offset}")  # this task's log lines
        async with self._limit:
            if record.value.get("type") != "message.changed":
                return Handled(Outcome.SKIPPED)  # unknown types are skipped
            key = (record.topic, record.partition, record.offset)
            try:
                handled = await handle_message_changed(record.value, batch)
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
        ids = connection_ids(r.value for r in records)
        batch = BatchView(self._deps, await load_mailboxes(self._deps.pool, ids) if ids else {})
        tasks: list[asyncio.Future[Handled | Fetched | str]] = [
            asyncio.ensure_future(self._one(r, batch)) for r in records]
        position = {task: i for i, task in enumerate(tasks)}
        stored = _Stored()
        poison: list[tuple[Record, str]] = []
        try:
            # Group commit: whatever has been fetched is decided and stored together while the rest is still
            # being fetched; a group waits for a quarter of the batch unless nothing else is in flight.
            group_size = max(1, len(records) // 4)
            waiting: list[tuple[Record, Handled | Fetched]] = []
            pending: set[asyncio.Future[Handled | Fetched | str]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=position.__getitem__):
                    record, result = records[position[task]], task.result()  # a failure cancels the siblings below
                    if isinstance(result, str):
                        poison.append((record, result))
                    elif isinstance(result, Fetched) or result.unseen is not None or result.synced:
                        waiting.append((record, result))
                if waiting and (len(waiting) >= group_size or not pending):
                    poison += await self._store(waiting, stored)
                    waiting = []
                    # Published as soon as the group is committed: one account's events leave in order, so
                    # any left unpublished would hold back other writers' (another replica's, re-matching's).
                    await outbox.publish_now(self._deps.pool, self._publisher, stored.outbox_ids)
                    stored.outbox_ids = []
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if stored.synced:
            # Once per batch, not per message: a per-message update of the same row would serialise every
            # concurrent message of a mailbox on that row's lock.
            await MatcherMarks(self._deps.pool).synced(sorted(stored.synced))
        order = {id(r): i for i, r in enumerate(records)}
        return sorted(poison, key=lambda item: order[id(item[0])])

    async def _store(self, group: list[tuple[Record, Handled | Fetched]], stored: _Stored) -> list[tuple[Record, str]]:
        """Decide and store a group in one transaction. When the database refuses the group for one record's
        data, each record is stored alone, so only the one at fault goes to the DLQ."""
        try:
            await _store_group([item for _, item in group], self._deps.pool, stored)
            return []
        except RECORD_REFUSED as exc:
            if len(group) == 1:
                return [(group[0][0], f"refused by the database: {type(exc).__name__}")]
        poison: list[tuple[Record, str]] = []
        for one in group:
            poison += await self._store([one], stored)
        return poison


class _Stored:
    """What a batch's groups stored, for the once-per-batch steps after them."""

    def __init__(self) -> None:
        self.outbox_ids: list[int] = []  # the feed events the last group committed
        self.synced: set[str] = set()


async def _store_group(items: list[Handled | Fetched], pool: asyncpg.Pool, stored: _Stored) -> None:
    fetched = [item for item in items if isinstance(item, Fetched)]
    unseen = [item.unseen for item in items if isinstance(item, Handled) and item.unseen is not None]
    # One directory read per account for the whole group (usually one account), one transaction.
    decided = await decide_and_store(pool, [to_decide(item) for item in fetched], unseen=unseen)
    jobs: dict[str, str] = {}
    for copy, item in zip(decided.copies, fetched, strict=True):
        result = copy.result
        DECISIONS.labels(result.decision.value, result.reasons[0].code if result.reasons else "").inc()
        if result.decision is Decision.MATCHED and item.job_id:
            jobs.setdefault(copy.engagement_id, item.job_id)  # the first copy is the one that inserts
    created_by_job: dict[str, int] = {}
    for engagement in decided.stored:
        job_id = jobs.get(engagement.engagement_id) if engagement.created else None
        if job_id:
            created_by_job[job_id] = created_by_job.get(job_id, 0) + 1
    # Counted as soon as the group is committed (a later failure of the batch cannot lose them: the rows
    # exist, so a retry creates nothing and counts nothing).
    await SyncJobs(pool).add_engagements_created(created_by_job)
    ENGAGEMENTS_CREATED.inc(sum(1 for engagement in decided.stored if engagement.created))
    stored.outbox_ids += decided.outbox_ids
    stored.synced.update(item.mailbox.connection.connection_id for item in fetched)
    stored.synced.update(item.synced for item in items if isinstance(item, Handled) and item.synced)
