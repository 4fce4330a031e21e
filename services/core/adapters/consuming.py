"""A batch consumer loop: process a batch, then commit; poison records to the DLQ; transient
failures rewind the batch and retry with back-off, so nothing is lost and nothing skipped; a record
that fails for any other reason is found and dead-lettered, so no record can stop the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge
from tenacity import RetryCallState, Retrying, wait_exponential_jitter

from services.core.adapters import faults
from services.core.adapters.kafka import AIOKafkaConsumer, ConsumerRecord, Publisher, TopicPartition
from services.core.adapters.observability import Liveness
from services.core.domain import events
from services.core.domain.event_types import DeadLetter
from services.core.domain.events import BadEvent

log = logging.getLogger(__name__)

RECORDS = Counter("mailsync_records_total", "Consumed records by topic and outcome", ["topic", "outcome"])
LAG = Gauge("mailsync_consumer_lag", "Records behind the end of the partition", ["topic", "partition"])


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str
    value: dict[str, Any]


# Processes a batch; returns the poison records (with why) for the DLQ. Raising rewinds the batch.
ProcessBatch = Callable[[list[Record]], Awaitable[list[tuple[Record, str]]]]
Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
T = TypeVar("T")


class Backoff:
    """How long to wait after each consecutive failed attempt: tenacity's exponential back-off with jitter
    (0.5 s doubling up to the cap), so replicas rewound by the same outage do not retry in step."""

    def __init__(self, max_s: float) -> None:
        self._wait = wait_exponential_jitter(multiplier=0.5, max=max_s, jitter=0.5)
        self._state = RetryCallState(Retrying(), None, (), {})
        self._state.attempt_number = 0

    def failed(self) -> float:
        self._state.attempt_number += 1
        return float(self._wait(self._state))

    def succeeded(self) -> None:
        self._state.attempt_number = 0


async def to_dlq(publisher: Publisher, topic: str, partition: int, offset: int, key: str, value: bytes,
                 error: str) -> None:
    """The original record (as text) plus why it was refused; the consumer keeps going."""
    await publisher.publish(events.dlq(topic), key, DeadLetter(
        topic=topic, partition=partition, offset=offset, key=key, value=value.decode("utf-8", "replace")[:100_000],
        error=error[:2000]))


async def gather_cancelling(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Like gather, but a failure cancels the siblings before it is raised: a batch that is rewound and
    retried never overlaps the attempt that failed."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _decoded(raws: list[ConsumerRecord[bytes, bytes]]) -> tuple[list[Record], list[tuple[Any, str]]]:
    good: list[Record] = []
    refused: list[tuple[Any, str]] = []
    for raw in raws:
        key = (raw.key or b"").decode("utf-8", "replace")
        try:
            good.append(Record(raw.topic, raw.partition, raw.offset, key, events.decode(raw.value)))
        except Exception as exc:  # decode promises BadEvent only; whatever else escapes is still this record's
            refused.append((raw, str(exc) if isinstance(exc, BadEvent) else faults.describe(exc)))
    return good, refused


async def run_batches(
    consumer: AIOKafkaConsumer, process: ProcessBatch, *, publisher: Publisher, stop: asyncio.Event,
    liveness: Liveness | None = None, max_records: int = 100, backoff_max_s: float = 30.0,
) -> None:
    """Until `stop` is set: fetch, decode (poison → DLQ), process, commit. Finishes the batch in hand.

    A batch that fails because of the infrastructure is rewound and retried with back-off. One that fails
    for any other reason is processed again one record at a time, so the record at fault goes to the DLQ
    with its reason and the others are applied: no record can stop the loop."""
    backoff = Backoff(backoff_max_s)
    while not stop.is_set():
        if liveness:
            liveness.tick()
        batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
        if not batch:
            continue
        good, refused = _decoded([raw for raws in batch.values() for raw in raws])
        for raw, error in refused:
            RECORDS.labels(raw.topic, "dlq").inc()
            await to_dlq(publisher, raw.topic, raw.partition, raw.offset,
                         (raw.key or b"").decode("utf-8", "replace"), raw.value or b"", error)
        try:
            poison = await process(good)
        except Exception as exc:
            if faults.is_infrastructure(exc):
                log.warning("batch failed; rewinding to retry", exc_info=exc, extra={"records": len(good)})
                await _rewind(consumer, batch, {}, stop, backoff.failed())
                continue
            log.warning("batch failed; isolating the record at fault", exc_info=exc, extra={"records": len(good)})
            isolated = await _one_by_one(consumer, process, good, batch, publisher, stop, backoff)
            if isolated is None:
                continue
            poison = isolated
        backoff.succeeded()
        await _dead_letter(publisher, poison)
        offsets = {tp: raws[-1].offset + 1 for tp, raws in batch.items()}
        await consumer.commit(offsets)
        for tp, raws in batch.items():
            RECORDS.labels(tp.topic, "ok").inc(len(raws))
            _update_lag(consumer, tp, offsets[tp])


async def _one_by_one(consumer: AIOKafkaConsumer, process: ProcessBatch, good: list[Record],
                      batch: Batch, publisher: Publisher, stop: asyncio.Event, backoff: Backoff,
                      ) -> list[tuple[Record, str]] | None:
    """Each record alone; the ones that fail (not the infrastructure's fault) are poison. On an
    infrastructure failure: what was settled is committed, the rest rewound; returns None."""
    poison: list[tuple[Record, str]] = []
    settled: dict[TopicPartition, int] = {}
    for record in good:
        try:
            poison.extend(await process([record]))
        except Exception as exc:
            if faults.is_infrastructure(exc):
                await _dead_letter(publisher, poison)
                await _rewind(consumer, batch, settled, stop, backoff.failed())
                return None
            log.error("record refused", exc_info=exc, extra={"offset": record.offset})
            poison.append((record, faults.describe(exc)))
        settled[TopicPartition(record.topic, record.partition)] = record.offset + 1
    return poison


async def _rewind(consumer: AIOKafkaConsumer, batch: Batch, settled: dict[TopicPartition, int],
                  stop: asyncio.Event, wait_s: float) -> None:
    """Commit what is settled, seek every partition back to its first unsettled record, back off."""
    if settled:
        await consumer.commit(settled)
    for tp, raws in batch.items():
        consumer.seek(tp, settled.get(tp, raws[0].offset))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=wait_s)


async def _dead_letter(publisher: Publisher, poison: list[tuple[Record, str]]) -> None:
    for record, error in poison:
        RECORDS.labels(record.topic, "dlq").inc()
        await to_dlq(publisher, record.topic, record.partition, record.offset, record.key,
                     events.encode(record.value), error)


def _update_lag(consumer: AIOKafkaConsumer, tp: TopicPartition, position: int) -> None:
    end = consumer.highwater(tp)
    if end is not None:
        LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
