"""Reads a topic from its current end, so a test sees exactly the records its actions caused."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.core.domain import events
from tests.support.wait import wait_until


def partition_count(topic: str) -> int:
    """Topics are created by `mailsync topics` from events.TOPICS (a DLQ has one partition)."""
    for spec in events.TOPICS:
        if spec.name == topic:
            return spec.partitions
    if topic.endswith(".dlq"):
        return 1
    raise ValueError(f"unknown topic {topic}")


def _lenient(raw: bytes | None) -> dict[str, Any]:
    """An event as the services decode it; a record they would refuse (a DLQ record quoting a NUL, say)
    is still kept, as plain JSON or as its raw text, so a test can see it."""
    try:
        return events.decode(raw)
    except events.BadEvent:
        try:
            value = json.loads(raw or b"")
        except (ValueError, RecursionError):
            value = None
        return value if isinstance(value, dict) else {"_raw": (raw or b"").decode("utf-8", "replace")}


class Tail:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                          isolation_level="read_committed")
        self.records: list[tuple[str, dict[str, Any]]] = []

    async def start(self) -> Tail:
        await self._consumer.start()
        partitions = range(partition_count(self.topic))
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before the test acts
            await self._consumer.position(tp)
        return self

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self) -> list[tuple[str, dict[str, Any]]]:
        batch = await self._consumer.getmany(timeout_ms=100)
        for records in batch.values():
            for r in records:
                self.records.append(((r.key or b"").decode("utf-8", "replace"), _lenient(r.value)))
        return self.records

    def matching(self, **fields: Any) -> list[dict[str, Any]]:
        return [v for _, v in self.records if all(v.get(k) == want for k, want in fields.items())]

    async def wait_for(self, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        async def found() -> list[dict[str, Any]]:
            await self.poll()
            return self.matching(**fields)

        return (await wait_until(found, timeout=timeout, what=f"{self.topic} record with {fields}"))[0]


async def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every record value of `topic` from the beginning up to its end as of this call (raw bytes, so a
    record that is not valid JSON is still seen)."""
    from aiokafka import AIOKafkaConsumer as Consumer

    consumer = Consumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                        isolation_level="read_committed")
    await consumer.start()
    values: list[bytes] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partition_count(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)

        async def behind() -> bool:
            return any([await consumer.position(tp) < offset for tp, offset in end.items()])

        while await behind():
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                values += [r.value or b"" for r in records if r.offset < end[tp]]
    finally:
        await consumer.stop()
    return values


async def group_lag(bootstrap: str, group: str, topic: str) -> int:
    """Records of `topic` not yet committed by consumer group `group` (end offset minus committed)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partition_count(topic))]
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        end = await consumer.end_offsets(tps)
        lag = 0
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag += max(0, end[tp] - done)
        return lag
    finally:
        await consumer.stop()
        await admin.close()
