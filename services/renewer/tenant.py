"""The renewer's part of the tenant-wide connection: an enrolment pass per connected tenant every
MAILSYNC_TENANT_SYNC_INTERVAL_S (users added to the directory are enrolled, deleted ones unenrolled, a
consent withdrawn is noticed even when no mail arrives). Each tenant is claimed with a lease in one
short statement; the Graph calls run with no transaction open; one tenant's failure never stops another's.
The tenant_connection.status events a writer could not publish itself are the outbox relay's."""

from __future__ import annotations

import logging
from datetime import timedelta

from services.core.adapters.graph.errors import GraphError
from services.core.application.tenant import TenantDeps, claim_due, release, sync_tenant

log = logging.getLogger(__name__)


async def sync_due_tenants(deps: TenantDeps) -> int:
    interval = timedelta(seconds=deps.settings.tenant_sync_interval_s)
    done = 0
    for tenant_connection_id in await claim_due(deps.pool, interval):
        try:
            counts = await sync_tenant(deps, tenant_connection_id)
            done += 1
            if any(counts.values()):
                log.info("tenant enrolment pass", extra={"tenant_connection_id": tenant_connection_id, **counts})
        except GraphError as exc:
            log.warning("tenant enrolment pass failed; retried next interval",
                        extra={"tenant_connection_id": tenant_connection_id, "error_code": exc.classified.error_code})
        except Exception:
            log.exception("tenant enrolment pass failed", extra={"tenant_connection_id": tenant_connection_id})
        finally:
            await release(deps.pool, tenant_connection_id)
    return done
