"""App-only tokens for the tenant-wide connection, through azure-identity.

`CertificateCredential` (preferred: MAILSYNC_APP_CERT_FILE, a PEM with key and certificate) or
`ClientSecretCredential` (MAILSYNC_CLIENT_SECRET), one per tenant, authority = MAILSYNC_LOGIN_URL. The
library caches the tokens (one request per tenant until the token nears expiry); a token Graph refused
is replaced by dropping that tenant's credential, since a claims-less get_token answers from the cache.
The HTTP transport is the service's aiohttp session, which verifies against the system CAs plus
MAILSYNC_CA_FILE (services.core.adapters.tls); verification is never turned off.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity.aio import CertificateCredential, ClientSecretCredential

from services.core.adapters import txguard
from services.core.adapters.config import Settings
from services.core.adapters.graph.errors import Classified, GraphError, Severity
from services.core.adapters.tenant_rules import classify_app_token_failure

GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
Credential = CertificateCredential | ClientSecretCredential


class AppCredentials:
    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._session = session
        self._by_tenant: dict[str, Credential] = {}
        # Objects built on a tenant's credential (msgraph-sdk clients): dropped with it.
        self._built: dict[tuple[str, str], Any] = {}
        self._shared: dict[str, Any] = {}  # closed with this object (the SDK's httpx client)

    @property
    def kind(self) -> str:
        return "certificate" if self._settings.app_cert_file else "client_secret"

    def _credential(self, tenant_id: str) -> Credential:
        found = self._by_tenant.get(tenant_id.lower())
        if found is not None:
            return found
        transport = AioHttpTransport(session=self._session, session_owner=False)
        options: dict[str, Any] = {"authority": self._settings.login_url, "transport": transport}
        credential: Credential
        if self._settings.app_cert_file:
            credential = CertificateCredential(tenant_id, self._settings.client_id,
                                               certificate_path=self._settings.app_cert_file, **options)
        else:
            credential = ClientSecretCredential(tenant_id, self._settings.client_id, self._settings.client_secret,
                                                **options)
        self._by_tenant[tenant_id.lower()] = credential
        return credential

    def azure_credential(self, tenant_id: str) -> Credential:
        """The tenant's credential itself, for an azure-core client (msgraph-sdk's auth provider)."""
        return self._credential(tenant_id)

    def built_on(self, tenant_id: str, name: str, factory: Callable[[Credential], Any]) -> Any:
        """`factory(credential)` once per tenant credential: rebuilt when the credential is replaced."""
        key = (tenant_id.lower(), name)
        found = self._built.get(key)
        if found is None:
            found = self._built[key] = factory(self._credential(tenant_id))
        return found

    def shared(self, name: str, factory: Callable[[], Any]) -> Any:
        """One `factory()` per process, closed (its `aclose()`) with this object: the SDK's httpx client."""
        found = self._shared.get(name)
        if found is None:
            found = self._shared[name] = factory()
        return found

    async def token(self, tenant_id: str, *, fresh: bool = False,
                    claims: Mapping[str, Any] | None = None) -> tuple[str, datetime]:
        """An app-only Graph token for the tenant and its expiry. `fresh`: the last one was refused."""
        if fresh:
            for key in [k for k in self._built if k[0] == tenant_id.lower()]:
                del self._built[key]
            old = self._by_tenant.pop(tenant_id.lower(), None)
            if old is not None:
                await old.close()
        txguard.check("identity token endpoint (client credentials)")
        credential = self._credential(tenant_id)
        try:
            got = await credential.get_token(GRAPH_DEFAULT_SCOPE, claims=json.dumps(claims) if claims else None)
        except ClientAuthenticationError as exc:
            status = exc.response.status_code if exc.response is not None else None
            classified = classify_app_token_failure(str(exc.message or exc), status)
            raise GraphError(classified, status) from None
        except ServiceRequestError:
            raise GraphError(Classified(Severity.TRANSIENT, "network_error", "Microsoft 365 could not be reached."),
                             None) from None
        return got.token, datetime.fromtimestamp(got.expires_on, UTC)

    async def close(self) -> None:
        for credential in self._by_tenant.values():
            await credential.close()
        self._by_tenant.clear()
        self._built.clear()
        for resource in self._shared.values():
            await resource.aclose()
        self._shared.clear()
