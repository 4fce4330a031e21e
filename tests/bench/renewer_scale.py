"""One renewer keeping many idle mailboxes current: polls, token refreshes and subscription renewals
completed per hour when all of them are due at once, against what N mailboxes need per hour.

Method (docs/scale.md, "One renewer, 10,000 mailboxes"):
- Seeding skips the subscriber's connect flow (back-fill, first poll, directory checks), but every
  credential and subscription is real: the sandbox's mailbox is created through its control API, its
  tokens come from the sandbox's authorization-code flow (auto-consent) and are sealed with the services'
  TokenBox into a `connected` mailbox_connections row, and its subscription is created at the sandbox with
  the services' own create_mailbox_subscription (validation handshake included), so renewals PATCH a
  subscription Graph knows and refreshes redeem a refresh token the identity platform issued.
- The stack's renewer is stopped; each window starts one fresh renewer, makes every seeded mailbox due at
  once (next poll now, access token inside the refresh margin, subscription inside its renewal window and
  authorized only until that token's expiry, so its PATCH wants a fresh token, as in production), lets it
  run a fixed time and reads what it completed from its own Prometheus counters, its CPU from /proc.
- Three windows: "fast" (1 s tick, what the loops can do when they never wait) at BASELINE mailboxes and
  at MAILBOXES (the ratio of CPU per unit of work shows whether the cost per mailbox grows with the
  population), then "production" (the default 30 s tick) at MAILBOXES: does one renewer as configured
  keep them current?
- Every poll in a window is a first poll for that renewer process (delta cursors cleared, the process
  new, so it also looks up each mailbox's excluded folders): dearer than the steady-state poll
  `delta_poll` measures, so poll capacity here is a lower bound where CPU or Graph bounds it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from services.core.adapters.crypto import TokenBox
from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.identity import IdentityClient, pkce_pair
from services.core.application.connections import REFRESH_AHEAD
from services.core.application.subscriptions import create_mailbox_subscription
from services.renewer.subscriptions import renew_window
from tests.bench.harness import BenchStack, cpu_seconds, rss_mib
from tests.support.procs import MAILSYNC, Proc, free_port

MAILBOXES = int(os.environ.get("MAILSYNC_BENCH_RENEWER_MAILBOXES", "10000"))
BASELINE = int(os.environ.get("MAILSYNC_BENCH_RENEWER_BASELINE", "1000"))
WINDOW_S = float(os.environ.get("MAILSYNC_BENCH_RENEWER_WINDOW_S", "120"))  # the production-tick window
SHORT_WINDOW_S = WINDOW_S / 4  # the 1 s tick windows: many passes fit
PRODUCTION_TICK_S = 30  # MAILSYNC_RENEWER_TICK_S's default
SEED_IN_FLIGHT = 24
REDIRECT_URI = "https://bench.mailsync.invalid/callback"  # never followed: the code is read off the redirect
METRICS = {  # Prometheus sample name and label -> our name
    ("mailsync_delta_polls_total", "ok"): "polls",
    ("mailsync_delta_polls_total", "failed"): "polls_failed",
    ("mailsync_token_refreshes_total", "ok"): "refreshes",
    ("mailsync_subscription_renewals_total", "renewed"): "renewals",
    ("mailsync_subscription_renewals_total", "failed"): "renewals_failed",
}


@dataclass
class Seeded:
    connection_id: str
    graph_id: str


class Seeder:
    """Connected mailboxes with real credentials and subscriptions, without the connect flow."""

    def __init__(self, bench: BenchStack, account_id: str, tenant_id: str) -> None:
        settings = bench.stack.settings
        assert settings is not None
        self.bench, self.settings = bench, settings
        self.account_id, self.tenant_id = account_id, tenant_id
        self.identity = IdentityClient(bench.http, settings)
        self.graph = GraphClient(bench.http, settings.graph_url, per_mailbox=1, budget_per_10min=100)
        self.box = TokenBox(settings.token_keys)
        self.seeded: list[Seeded] = []

    async def grow_to(self, total: int) -> float:
        """Seed until `total` mailboxes exist; returns the seconds it took."""
        started = time.perf_counter()
        todo = list(range(len(self.seeded), total))
        await _in_flight(SEED_IN_FLIGHT, [functools.partial(self._one, i) for i in todo])
        return time.perf_counter() - started

    async def _one(self, index: int) -> None:
        graph_id = str(uuid.uuid4())
        address = f"bench-{index}-{graph_id[:8]}@{self.account_id}.example"
        await self.bench.stack.sandbox("POST", "/sandbox/mailboxes", {
            "user_id": graph_id, "tenant_id": self.tenant_id, "address": address,
            "display_name": f"Bench {index}", "auto_consent": True})
        verifier, challenge = pkce_pair()
        url = self.identity.authorize_url(state="bench", challenge=challenge, redirect_uri=REDIRECT_URI,
                                          login_hint=address)
        async with self.bench.http.get(url, allow_redirects=False) as resp:
            location = resp.headers.get("Location", "")
        code = parse_qs(urlsplit(location).query).get("code", [""])[0]
        assert code, f"no code for {address}: {location[:200]}"
        tokens = await self.identity.exchange_code(code, verifier, REDIRECT_URI)
        connection_id = str(uuid.uuid4())
        await self.bench.pool.execute(
            """INSERT INTO mailbox_connections (connection_id, account_id, user_id, tenant_id, graph_user_id,
                      mailbox_address, mailbox_addresses, status, scopes, access_token_enc, refresh_token_enc,
                      access_expires_at, connected_at, next_poll_at)
               VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, 'connected', $8, $9, $10, $11, now(),
                       now() + interval '1 day')""",
            connection_id, self.account_id, f"bench-user-{graph_id}", self.tenant_id, graph_id, address,
            [address], list(tokens.scopes), self.box.encrypt(tokens.access_token, bound_to=connection_id),
            self.box.encrypt(tokens.refresh_token, bound_to=connection_id), tokens.expires_at)
        await create_mailbox_subscription(
            self.bench.pool, self.graph, self.settings, token=tokens.access_token, connection_id=connection_id,
            account_id=self.account_id, tenant_id=self.tenant_id, graph_user_id=graph_id,
            token_expires_at=tokens.expires_at)
        self.seeded.append(Seeded(connection_id, graph_id))


async def _in_flight(limit: int, jobs: list[Callable[[], Awaitable[None]]]) -> None:
    queue = iter(jobs)

    async def worker() -> None:
        for job in queue:
            await job()

    await asyncio.gather(*(worker() for _ in range(limit)))


async def _metrics(http: aiohttp.ClientSession, port: int) -> dict[str, float]:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    found = dict.fromkeys(METRICS.values(), 0.0)
    for name, label, value in re.findall(r'^(\w+)\{\w+="(\w+)"\} ([0-9.e+]+)$', text, re.MULTILINE):
        key = METRICS.get((name, label))
        if key is not None:
            found[key] += float(value)
    return found


def _start_renewer(bench: BenchStack, name: str, tick_s: int) -> tuple[Proc, int]:
    port = free_port()
    env = {**bench.stack.env, "MAILSYNC_RENEWER_TICK_S": str(tick_s), "MAILSYNC_HTTP_PORT": str(port)}
    proc = Proc(name, [*MAILSYNC, "renewer"], env)
    proc.wait_http_ok(f"http://127.0.0.1:{port}/readyz")
    return proc, port


async def _make_due(bench: BenchStack, account_id: str) -> None:
    """Everything due at once. The token stays usable 50 s more (REFRESH_AHEAD + 50 s) and is inside the
    production refresh margin (REFRESH_AHEAD + 2 ticks of 30 s); with a 1 s tick the margin is REFRESH_AHEAD
    + 2 s, so in the fast windows the refresh loop does not reach these tokens and every refresh there is
    one a renewal asked for. The subscription is inside its renewal window and authorized only until that
    token's expiry, so its PATCH wants a fresh token first, as in production."""
    assert bench.stack.settings is not None
    token_expiry = REFRESH_AHEAD.total_seconds() + 50
    window = renew_window(bench.stack.settings.subscription_lifetime_min)
    async with bench.pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM delta_cursors WHERE connection_id IN"
                           " (SELECT connection_id FROM mailbox_connections WHERE account_id = $1)", account_id)
        await conn.execute(
            """UPDATE mailbox_connections SET next_poll_at = now(), poll_lease_until = NULL,
                      refresh_lease_until = NULL, access_expires_at = now() + $2 * interval '1 second'
                WHERE account_id = $1""", account_id, token_expiry)
        await conn.execute(
            """UPDATE subscriptions SET expires_at = now() + $2::interval - interval '1 hour',
                      authorized_until = now() + $3 * interval '1 second', renew_lease_until = NULL
                WHERE account_id = $1""", account_id, window, token_expiry)


def _nodes(plan: dict[str, Any]) -> str:
    """The plan's node types, outermost first: shows a scan of every row (Seq Scan) at a glance."""
    inner = [_nodes(p) for p in plan.get("Plans", [])]
    return str(plan["Node Type"]) + (f" > {', '.join(inner)}" if inner else "")


async def _pass_times(bench: BenchStack) -> dict[str, float | str]:
    """How long the select of each loop takes with this population (EXPLAIN ANALYZE of the same predicate,
    read-only), and the rows the renewer's tables hold."""
    out: dict[str, float | str] = {}
    queries = {
        "poll_claim_select_ms": """SELECT connection_id FROM mailbox_connections
                    WHERE status = 'connected' AND graph_user_id IS NOT NULL
                      AND (next_poll_at IS NULL OR next_poll_at <= now())
                      AND (poll_lease_until IS NULL OR poll_lease_until < now())
                    ORDER BY next_poll_at NULLS FIRST LIMIT 50""",
        "refresh_select_ms": """SELECT connection_id FROM mailbox_connections
                    WHERE status = 'connected' AND access_expires_at < now() + interval '6 minutes'
                    ORDER BY access_expires_at LIMIT 200""",
        "renew_claim_select_ms": """SELECT s2.subscription_id FROM subscriptions s2
                     JOIN mailbox_connections c ON c.connection_id = s2.connection_id AND c.status = 'connected'
                    WHERE s2.expires_at < now() + interval '1410 minutes'
                      AND (s2.renew_lease_until IS NULL OR s2.renew_lease_until < now())
                    ORDER BY s2.expires_at LIMIT 8""",
    }
    for name, sql in queries.items():
        plan = await bench.pool.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        parsed = plan if isinstance(plan, list) else json.loads(plan)
        out[name] = float(parsed[0]["Execution Time"])
        out[name.replace("_ms", "_plan")] = _nodes(parsed[0]["Plan"])
    out["rows_mailbox_connections"] = float(await bench.pool.fetchval("SELECT count(*) FROM mailbox_connections"))
    out["rows_subscriptions"] = float(await bench.pool.fetchval("SELECT count(*) FROM subscriptions"))
    out["rows_delta_cursors"] = float(await bench.pool.fetchval("SELECT count(*) FROM delta_cursors"))
    return out


async def _window(bench: BenchStack, seeder: Seeder, tick_s: int, window_s: float) -> dict[str, float]:
    """Start a fresh renewer, make every seeded mailbox due, run window_s, count what it completed."""
    n = len(seeder.seeded)
    await _make_due(bench, seeder.account_id)
    t0 = await bench.pool.fetchval("SELECT now()")
    proc, port = _start_renewer(bench, f"bench-renewer-{n}-tick{tick_s}", tick_s)
    try:
        before = await _metrics(bench.http, port)
        stats0 = await bench.stack.sandbox("GET", "/sandbox/stats")
        sandbox_pid = bench.pid("sandbox")
        cpu0, sandbox_cpu0, started = cpu_seconds(proc.popen.pid), cpu_seconds(sandbox_pid), time.perf_counter()
        load0 = os.getloadavg()[0]
        await asyncio.sleep(window_s)  # a fixed measuring window, not a readiness wait
        took, cpu = time.perf_counter() - started, cpu_seconds(proc.popen.pid) - cpu0
        sandbox_cpu = cpu_seconds(sandbox_pid) - sandbox_cpu0
        after = await _metrics(bench.http, port)
        rss = rss_mib(proc.popen.pid)
        stats = await bench.stack.sandbox("GET", "/sandbox/stats")
    finally:
        proc.stop()
    done = {k: after[k] - before[k] for k in after}
    mine = {s.graph_id for s in seeder.seeded}
    # Graph requests of the polls: all of these mailboxes' requests in the window but the renewals' PATCHes.
    graph_requests = _poll_requests(stats, mine) - _poll_requests(stats0, mine)
    # Work left undone at the end: a kind with none left ran out of work, so its rate is a lower bound.
    left = await bench.pool.fetchrow(
        """SELECT count(*) FILTER (WHERE last_polled_at IS NULL OR last_polled_at < $2) AS polls,
                  count(*) FILTER (WHERE access_expires_at < now() + interval '30 minutes') AS refreshes,
                  (SELECT count(*) FROM subscriptions WHERE account_id = $1
                      AND (renewed_at IS NULL OR renewed_at < $2)) AS renewals
             FROM mailbox_connections WHERE account_id = $1""", seeder.account_id, t0)
    units = done["polls"] + done["refreshes"] + done["renewals"]
    spans = await bench.pool.fetchrow(
        """SELECT array(SELECT extract(epoch FROM last_polled_at) FROM mailbox_connections
                         WHERE account_id = $1 AND last_polled_at >= $2) AS polls,
                  array(SELECT extract(epoch FROM updated_at) FROM mailbox_connections
                         WHERE account_id = $1 AND updated_at >= $2) AS refreshes,
                  array(SELECT extract(epoch FROM renewed_at) FROM subscriptions
                         WHERE account_id = $1 AND renewed_at >= $2) AS renewals""", seeder.account_id, t0)
    figures = {
        "mailboxes": float(n), "window_s": took, "host_load_1min": max(load0, os.getloadavg()[0]),
        "polls": done["polls"], "polls_failed": done["polls_failed"], "refreshes": done["refreshes"],
        "renewals": done["renewals"], "renewals_failed": done["renewals_failed"],
        "token_endpoint_requests": float(stats["token_endpoint"]["requests"] - stats0["token_endpoint"]["requests"]),
        "graph_requests_per_poll": graph_requests / done["polls"] if done["polls"] else 0.0,
        "renewer_cpu_s": cpu, "renewer_cpu_share": cpu / took, "renewer_rss_mib": rss,
        "sandbox_cpu_share": sandbox_cpu / took,
        "cpu_ms_per_unit": cpu * 1000 / units if units else 0.0,
    }
    for kind in ("polls", "refreshes", "renewals"):
        figures[f"{kind}_per_hour"] = done[kind] / took * 3600
        figures[f"{kind}_still_due"] = float(left[kind])
        if tick_s >= 10:  # passes a tick apart: each pass's span, first completion to last
            figures[f"{kind}_pass_s"] = _mean_pass(sorted(float(t) for t in spans[kind]), gap=tick_s / 2)
    return figures


def _mean_pass(times: list[float], *, gap: float) -> float:
    """Completion times split where they pause for more than `gap`: the mean span of those groups."""
    if not times:
        return 0.0
    groups, start = [], times[0]
    for before, at in itertools.pairwise(times):
        if at - before > gap:
            groups.append(before - start)
            start = at
    groups.append(times[-1] - start)
    return sum(groups) / len(groups)


def _poll_requests(stats: dict[str, Any], mine: set[str]) -> float:
    return sum(float(v.get("requests", 0)) - float(v.get("subscription_renewals", 0))
               for k, v in stats["mailboxes"].items() if k in mine)


def required_per_hour(n: int, lifetime_min: int, token_lifetime_s: float, tick_s: float) -> dict[str, float]:
    """What n idle mailboxes need per hour: one poll each; a refresh each time the token enters the refresh
    margin (REFRESH_AHEAD + 2 ticks before its expiry); a renewal each time the subscription enters its
    renewal window (a third of its lifetime left)."""
    token_cycle_h = (token_lifetime_s - REFRESH_AHEAD.total_seconds() - 2 * tick_s) / 3600
    renew_cycle_h = (lifetime_min - renew_window(lifetime_min).total_seconds() / 60) / 60
    return {"polls": float(n), "refreshes": n / token_cycle_h, "renewals": n / renew_cycle_h}


async def run(bench: BenchStack) -> dict[str, float | str]:
    """Three windows: the work the renewer's loops can do (1 s tick) at BASELINE and at MAILBOXES
    mailboxes, then the renewer as configured in production (30 s tick) at MAILBOXES."""
    stack = bench.stack
    settings = stack.settings
    assert settings is not None
    account_id, tenant_id = stack.new_account(), str(uuid.uuid4())
    faults = await stack.sandbox("GET", "/sandbox/faults")
    token_lifetime_s = float(faults.get("access_token_lifetime_s", 4500))
    seeder = Seeder(bench, account_id, tenant_id)
    stack.procs["renewer"].stop()  # one renewer at a time: the bench's own
    results: dict[str, float | str] = {}
    try:
        plan = [(BASELINE, 1, SHORT_WINDOW_S, "fast_baseline"), (MAILBOXES, 1, SHORT_WINDOW_S, "fast"),
                (MAILBOXES, PRODUCTION_TICK_S, WINDOW_S, "production")]
        for size, tick_s, window_s, name in plan:
            if size > len(seeder.seeded):
                seed_s = await seeder.grow_to(size)
                results[f"seed_{size}_s"] = seed_s
            print(f"renewer_scale: {size} mailboxes, tick {tick_s}s, measuring {window_s:.0f}s", flush=True)
            figures: dict[str, float | str] = {**await _window(bench, seeder, tick_s, window_s)}
            figures.update(await _pass_times(bench))
            need = required_per_hour(size, settings.subscription_lifetime_min, token_lifetime_s, PRODUCTION_TICK_S)
            for kind, rate in need.items():
                figures[f"required_{kind}_per_hour"] = rate
                capacity = float(figures[f"{kind}_per_hour"])
                figures[f"utilisation_{kind}"] = rate / capacity if capacity else float("inf")
            results.update({f"{name}_{k}": v for k, v in figures.items()})
        if results.get("fast_baseline_cpu_ms_per_unit"):
            results["fast_cpu_per_unit_ratio_vs_baseline"] = (
                float(results["fast_cpu_ms_per_unit"]) / float(results["fast_baseline_cpu_ms_per_unit"]))
    finally:
        # The stack's renewer back, for the sections after this one; the seeded mailboxes out of its way.
        await bench.pool.execute("UPDATE mailbox_connections SET status = 'disconnected' WHERE account_id = $1",
                                 account_id)
        env = {**stack.env, "MAILSYNC_HTTP_PORT": str(stack.ports["renewer"])}
        stack.procs["renewer"] = Proc("renewer", [*MAILSYNC, "renewer"], env)
        stack.procs["renewer"].wait_http_ok(f"http://127.0.0.1:{stack.ports['renewer']}/readyz")
    return results
