"""Tenant-wide connection: CPU per control-plane call (`GET /organization`) through msgraph-sdk against
the plain aiohttp client, measured in this process (the sandbox runs as its own process), both with the
same app-only token from azure-identity; and the Graph requests an enrolment pass costs per tenant."""

from __future__ import annotations

import time
import uuid

from services.core.adapters.app_credential import AppCredentials
from services.core.adapters.graph.client import GraphClient
from services.core.adapters.tenant_graph import verified_domains
from tests.bench.harness import BenchStack

CALLS = 200


async def run(bench: BenchStack) -> dict[str, float | str]:
    stack = bench.stack
    assert stack.settings is not None
    tenant = str(uuid.uuid4())
    await stack.sandbox("POST", "/sandbox/mailboxes", {"user_id": str(uuid.uuid4()), "tenant_id": tenant,
                                                       "address": f"bench@{tenant[:8]}.example"})
    await stack.sandbox("POST", f"/sandbox/tenants/{tenant}/policy", {"auto_admin_consent": True})
    async with bench.http.get(f"{stack.sandbox_url}/{tenant}/v2.0/adminconsent", allow_redirects=False, params={
            "client_id": stack.settings.client_id, "redirect_uri": "https://127.0.0.1:9/cb", "state": "s"}) as r:
        assert r.status == 302
    app = AppCredentials(stack.settings, bench.http)
    graph = GraphClient(bench.http, stack.settings.graph_url)
    try:
        token, _ = await app.token(tenant)
        await verified_domains(stack.settings, app, tenant)  # imports and warms the SDK
        await graph.request("GET", "/organization", token, mailbox=tenant)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(CALLS):
            await verified_domains(stack.settings, app, tenant)
        sdk_cpu, sdk_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(CALLS):
            await graph.request("GET", "/organization", token, mailbox=tenant)
        plain_cpu, plain_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await app.close()
    return {
        "sdk_cpu_ms_per_call": sdk_cpu / CALLS * 1000,
        "plain_cpu_ms_per_call": plain_cpu / CALLS * 1000,
        "sdk_over_plain_cpu": sdk_cpu / plain_cpu if plain_cpu else float("inf"),
        "sdk_wall_ms_per_call": sdk_wall / CALLS * 1000,
        "plain_wall_ms_per_call": plain_wall / CALLS * 1000,
        "note": "one httpx client and one SDK client per tenant credential, kept across calls (tenant_graph)",
    }
