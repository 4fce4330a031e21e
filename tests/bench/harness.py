"""The system under benchmark: the same processes the tests start, quieter logs."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from services.core.adapters.config import load_settings
from services.core.adapters.db.pool import create_pool
from services.core.adapters.kafka import Publisher
from tests.support.stack import Stack, client, start_stack, stop_stack


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class BenchStack:
    stack: Stack
    pool: asyncpg.Pool
    http: aiohttp.ClientSession
    publisher: Publisher

    @classmethod
    async def start(cls) -> BenchStack:
        os.environ.setdefault("MAILSYNC_LOG_LEVEL", "WARNING")
        started = time.perf_counter()
        stack = start_stack()
        print(f"stack ready in {time.perf_counter() - started:.1f}s", flush=True)
        settings = load_settings(stack.env, service="bench")
        stack.settings = settings
        publisher = Publisher(settings)
        await publisher.start()
        stack.publisher = publisher
        stack.http = client(stack.ca_file)
        stack.pool = await create_pool(settings, max_size=10)
        return cls(stack, stack.pool, stack.http, publisher)

    def pid(self, name: str) -> int:
        return self.stack.procs[name].popen.pid

    async def stop(self) -> None:
        await self.pool.close()
        await self.http.close()
        await self.publisher.stop()
        stop_stack(self.stack)
