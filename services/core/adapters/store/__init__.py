"""The persistence boundary: the only place SQL is written (tests/unit/test_persistence_boundary.py).

Repositories are small classes over an asyncpg pool (one autocommit statement) or connection (the caller's
transaction), grouped by the aggregate that owns their tables: each table is written by one aggregate only
(the same test checks it); reads for a page or a decision may join other aggregates' tables. `UnitOfWork`
opens one transaction and exposes repositories on its connection, for the writes that must commit together.
Callers hold no transaction across a network call: claim with a lease, commit, call, then record in a
second short transaction.

    mailbox/          mailbox_connections, connection_events, delta_cursors: status (connections.py), tokens
                      and the refresh lease (tokens.py), the poll lease and cursors (polls.py), subscribe
                      back-off and counts (upkeep.py), tenant-mode rows (tenant_mode.py), matching's reads
                      (owners.py)
    engagement/       engagements and their mailboxes, contacts, clients (engagements.py), match_decisions
                      (decisions.py), purge-content's trims (content.py), the settings page's summaries
                      (activity.py, reads)
    subscriptions.py  subscriptions and subscription_deletions: creation, renewal leases, pending deletions,
                      the subscribe lock
    jobs.py           sync_jobs: back-syncs and back-fills, claimed under a lease, progress per page
    sends.py          sends: the send worker's lease, attempts and outcomes
    directory.py      accounts, users and their addresses, contacts, clients and their domains, blocklists
    policy.py         accounts' capture and exclude_automated, users' never_log (reads)
    tenants.py        tenant_connections, tenant_consent_states, tenant_mailboxes, shared_mailboxes
    notices.py        notices: incidents and reminders
    oauth_states.py   oauth_states: the user's sign-in flows
    outbox.py         outbox: every event written with its change (services/core/application/outbox.py)
    legacy_outboxes.py  notice_outbox and tenant_status_outbox, drained into outbox for one release
"""
