"""The PostgreSQL-backed credential drives the msgraph SDK (azure-core's AsyncTokenCredential)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.graph_request_adapter import options as sdk_options
from msgraph_core import GraphClientFactory

from services.core.adapters.crypto import TokenBox
from services.core.adapters.graph.identity import IdentityClient
from services.core.adapters.tls import client_context, client_session
from services.core.application.connections import StatusReporter, TokenService
from services.core.application.credential import ConnectionCredential
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


async def test_sdk_reads_the_mailbox_owner_through_the_stored_tokens(stack: Stack):
    mailbox = await stack.new_mailbox(stack.new_account())
    assert stack.settings is not None and stack.pool is not None and stack.publisher is not None
    async with client_session(stack.ca_file) as session:
        tokens = TokenService(stack.pool, TokenBox(stack.settings.token_keys), IdentityClient(session, stack.settings),
                              StatusReporter(stack.pool, stack.publisher, stack.settings.app_url))
        credential = ConnectionCredential(tokens, mailbox.connection_id)
        host = urlsplit(stack.settings.graph_url).hostname or ""
        auth = AzureIdentityAuthenticationProvider(credential, scopes=["https://graph.microsoft.com/.default"],
                                                   allowed_hosts=[host])
        # The SDK's own httpx client, verifying the sandbox against the local CA (never without).
        http = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(verify=client_context(stack.ca_file)), options=sdk_options)
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = stack.settings.graph_url
        me = await GraphServiceClient(request_adapter=adapter).me.get()
    assert me is not None and me.mail == mailbox.address and me.id == mailbox.graph_id
