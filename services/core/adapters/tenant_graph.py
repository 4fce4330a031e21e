"""Graph's control plane for the tenant-wide connection through msgraph-sdk: the organisation's verified
domains (`GET /organization`). A call or two per consent and per enrolment pass, so the SDK's CPU cost
(about 10 ms per call, docs/graph.md#sdk) does not matter here; the per-message hot path and delta pages
stay on the plain aiohttp client (services.core.adapters.graph.client).

The SDK runs on one httpx client per process, verifying against the system CAs plus MAILSYNC_CA_FILE; its
token comes from the tenant's azure-identity credential (services.core.adapters.app_credential), and the SDK client
built on that credential is kept until the credential is replaced.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import ClientAuthenticationError

from services.core.adapters import txguard
from services.core.adapters.app_credential import GRAPH_DEFAULT_SCOPE, AppCredentials
from services.core.adapters.config import Settings
from services.core.adapters.graph.errors import Classified, GraphError, Severity
from services.core.adapters.tenant_rules import classify_app_token_failure
from services.core.adapters.tls import client_context


async def verified_domains(settings: Settings, app: AppCredentials, tenant_id: str) -> list[str]:
    """The tenant's verified domains, lower-cased; GraphError when they cannot be read."""
    import httpx  # the SDK's import costs ~0.5 s: only the processes that use it pay
    from kiota_abstractions.api_error import APIError
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_request_adapter import options as sdk_options
    from msgraph.graph_service_client import GraphServiceClient
    from msgraph_core import GraphClientFactory

    txguard.check("Graph GET /organization (msgraph-sdk)")
    http_client = app.shared("sdk-http", lambda: httpx.AsyncClient(verify=client_context(settings.ca_file),
                                                                   timeout=20.0))
    host = urlsplit(settings.graph_url).hostname or ""

    def sdk(credential: Any) -> GraphServiceClient:
        auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_DEFAULT_SCOPE], allowed_hosts=[host])
        http = GraphClientFactory.create_with_default_middleware(client=http_client, options=sdk_options)
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = settings.graph_url
        return GraphServiceClient(request_adapter=adapter)

    client: GraphServiceClient = app.built_on(tenant_id, "sdk", sdk)
    try:
        found = await client.organization.get()
    except ClientAuthenticationError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise GraphError(classify_app_token_failure(str(exc.message or exc), status), status) from None
    except APIError as exc:
        status = exc.response_status_code
        severity = Severity.TRANSIENT if status is None or status >= 500 or status == 429 else Severity.PERMANENT
        raise GraphError(Classified(severity, f"http_{status}", "Microsoft 365 did not answer the "
                                    "organisation's verified domains."), status) from None
    except httpx.HTTPError:
        raise GraphError(Classified(Severity.TRANSIENT, "network_error", "Microsoft 365 could not be reached."),
                         None) from None
    domains: list[str] = []
    for org in (found.value if found is not None and found.value else []):
        for domain in org.verified_domains or []:
            if domain.name:
                domains.append(domain.name.strip().lower())
    return domains
