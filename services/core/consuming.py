"""A batch consumer loop: process a batch, then commit; poison records to the DLQ; transient
failures rewind the batch and retry with back-off, so nothing is lost and nothing skipped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge

from services.core import events
from services.core.events import BadEvent
from services.core.kafka import Publisher
from services.core.observability import Liveness

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


async def to_dlq(publisher: Publisher, topic: str, partition: int, offset: int, key: str, value: bytes,
                 error: str) -> None:
    """The original record (as text) plus why it was refused; the consumer keeps going."""
    await publisher.publish(events.dlq(topic), key, events.envelope("dlq.record", {
        "topic": topic, "partition": partition, "offset": offset, "key": key,
        "value": value.decode("utf-8", "replace")[:100_000], "error": error[:2000]}))


async def run_batches(
    consumer: AIOKafkaConsumer, process: ProcessBatch, *, publisher: Publisher, stop: asyncio.Event,
    liveness: Liveness | None = None, max_records: int = 100, backoff_max_s: float = 30.0,
) -> None:
    """Until `stop` is set: fetch, decode (poison → DLQ), process, commit. Finishes the batch in hand."""
    backoff = 0.5
    while not stop.is_set():
        if liveness:
            liveness.tick()
        batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
        if not batch:
            continue
        good: list[Record] = []
        for raws in batch.values():
            for raw in raws:
                try:
                    value = events.decode(raw.value)
                    good.append(Record(raw.topic, raw.partition, raw.offset,
                                       (raw.key or b"").decode("utf-8", "replace"), value))
                except BadEvent as exc:
                    RECORDS.labels(raw.topic, "dlq").inc()
                    await to_dlq(publisher, raw.topic, raw.partition, raw.offset,
                                 (raw.key or b"").decode("utf-8", "replace"), raw.value or b"", str(exc))
        try:
            poison = await process(good)
        except Exception:
            log.exception("batch failed; rewinding to retry", extra={"records": len(good)})
            for tp, raws in batch.items():
                consumer.seek(tp, raws[0].offset)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(backoff * 2, backoff_max_s)
            continue
        backoff = 0.5
        for record, error in poison:
            RECORDS.labels(record.topic, "dlq").inc()
            await to_dlq(publisher, record.topic, record.partition, record.offset, record.key,
                         events.encode(record.value), error)
        offsets = {tp: raws[-1].offset + 1 for tp, raws in batch.items()}
        await consumer.commit(offsets)
        for tp, raws in batch.items():
            RECORDS.labels(tp.topic, "ok").inc(len(raws))
            _update_lag(consumer, tp, offsets[tp])


def _update_lag(consumer: AIOKafkaConsumer, tp: TopicPartition, position: int) -> None:
    end = consumer.highwater(tp)
    if end is not None:
        LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
