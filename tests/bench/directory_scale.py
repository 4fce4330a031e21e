"""Directory lookups for an account with 100,000 contacts (200,000 addresses) against a 10-contact
account: the per-message snapshot must stay an index lookup."""

from __future__ import annotations

import time
import uuid

from services.core.application.directory_lookup import load_snapshot
from tests.bench.harness import BenchStack, percentile

BIG = 100_000
LOOKUPS = 2_000


async def _account(bench: BenchStack, contacts: int) -> str:
    account = f"scale-{uuid.uuid4().hex[:8]}"
    async with bench.pool.acquire() as conn:
        await conn.execute("INSERT INTO accounts (account_id) VALUES ($1)", account)
        await conn.copy_records_to_table("contacts", columns=["contact_id", "account_id"],
                                         records=[(f"{account}-c{i}", account) for i in range(contacts)])
        await conn.copy_records_to_table(
            "contact_addresses", columns=["contact_id", "account_id", "address", "is_primary"],
            records=[r for i in range(contacts) for r in (
                (f"{account}-c{i}", account, f"person{i}@client{i % 500}.example", True),
                (f"{account}-c{i}", account, f"p{i}@personal.example", False))])
        await conn.execute("ANALYZE contact_addresses")
    return account


async def _timings(bench: BenchStack, account: str, contacts: int) -> list[float]:
    out = []
    for n in range(LOOKUPS):
        i = (n * 7919) % contacts
        wanted = frozenset({f"person{i}@client{i % 500}.example", "someone@unknown.example", "me@us.example"})
        started = time.perf_counter()
        snapshot = await load_snapshot(bench.pool, account, wanted)
        out.append(time.perf_counter() - started)
        assert snapshot.contacts_by_address, "the lookup must find the contact"
    return out


async def run(bench: BenchStack) -> dict[str, float | str]:
    small = await _account(bench, 10)
    started = time.perf_counter()
    big = await _account(bench, BIG)
    load_s = time.perf_counter() - started
    small_t, big_t = await _timings(bench, small, 10), await _timings(bench, big, BIG)
    return {"contacts": float(BIG), "load_seconds": load_s,
            "snapshot_p50_ms_100k": percentile(big_t, 0.5) * 1000,
            "snapshot_p99_ms_100k": percentile(big_t, 0.99) * 1000,
            "baseline_snapshot_p50_ms_10_contacts": percentile(small_t, 0.5) * 1000,
            "ratio_p50_vs_baseline": percentile(big_t, 0.5) / percentile(small_t, 0.5)}
