"""Webhook intake: notifications per second accepted into Kafka (acks=all) and answer times,
against a bare aiohttp handler that answers 202 without publishing (same machine, same client)."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
import uuid

import aiohttp

from tests.bench.harness import BenchStack, percentile
from tests.support.procs import free_port

REQUESTS = 3000
CONCURRENCY = 32

BARE = """
import sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(status=202)
app = web.Application()
app.router.add_post("/graph/notifications", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def _load(url: str, bodies: list[dict]) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http:
        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                async with http.post(url, json=body) as resp:
                    await resp.read()
                    if resp.status != 202:
                        failures += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return time.perf_counter() - started, latencies, failures


async def run(bench: BenchStack) -> dict[str, float | str]:
    account, tenant, client_state = f"bench-{uuid.uuid4().hex[:6]}", str(uuid.uuid4()), secrets.token_urlsafe(32)
    connection_id = await bench.pool.fetchval(
        "INSERT INTO mailbox_connections (account_id, user_id, status) VALUES ($1, $2, 'connected')"
        " RETURNING connection_id", account, f"bench-user-{uuid.uuid4().hex[:6]}")
    subscription_id = str(uuid.uuid4())
    await bench.pool.execute(
        "INSERT INTO subscriptions (subscription_id, connection_id, account_id, tenant_id, resource, client_state,"
        " expires_at) VALUES ($1, $2, $3, $4, '/users/u/messages', $5, now() + interval '1 day')",
        subscription_id, connection_id, account, tenant, client_state)
    bodies = []
    for _ in range(REQUESTS):
        message_id = str(uuid.uuid4())
        bodies.append({"value": [{
            "subscriptionId": subscription_id, "clientState": client_state, "changeType": "created",
            "tenantId": tenant, "resource": f"Users/u/Messages/{message_id}",
            "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": message_id}}]})
    # The matcher would fetch these (they do not exist): pause it so the intake is measured alone.
    bench.stack.procs["matcher"].popen.send_signal(19)  # SIGSTOP
    try:
        port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE, str(port)])  # noqa: ASYNC220 - starts at once
        try:
            await _wait_port(port)
            base_s, base_lat, _ = await _load(f"http://127.0.0.1:{port}/graph/notifications", bodies[:1000])
        finally:
            bare.terminate()
            bare.wait()
        took, latencies, failures = await _load(f"{bench.stack.api_url}/graph/notifications", bodies)
    finally:
        bench.stack.procs["matcher"].popen.send_signal(18)  # SIGCONT
    rate, base_rate = REQUESTS / took, 1000 / base_s
    return {
        "notifications_per_s": rate, "baseline_bare_202_per_s": base_rate, "ratio_vs_baseline": rate / base_rate,
        "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000,
        "p99_9_ms": percentile(latencies, 0.999) * 1000, "baseline_p50_ms": percentile(base_lat, 0.5) * 1000,
        "non_202": float(failures),
    }


async def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("bare baseline server did not start")
