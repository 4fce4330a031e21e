"""A Tail that can prove it has read everything: "exactly one event" is only worth asserting once the
tail has read every record published before the check (its partitions' end offsets as of that moment)."""

from __future__ import annotations

from typing import Any

from tests.support.kafka_tail import Tail
from tests.support.wait import wait_until


class CaughtUpTail(Tail):
    async def caught_up(self, timeout: float = 20.0) -> list[tuple[str, dict[str, Any]]]:
        """Poll until every record published before this call has been read; returns all records read."""
        consumer = self._consumer
        partitions = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        end = await consumer.end_offsets(partitions)

        async def done() -> bool:
            await self.poll()
            return all([await consumer.position(tp) >= end[tp] for tp in partitions])

        await wait_until(done, timeout=timeout, what=f"{self.topic} read up to its end offsets {end}")
        return self.records
