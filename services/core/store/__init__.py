"""The persistence boundary: the only place SQL is written (tests/unit/test_persistence_boundary.py).

One module per aggregate, each a small repository class over an asyncpg pool or connection; a table has one
owning module, which alone writes it (reads for a page may join others' tables). `UnitOfWork` opens one
transaction and exposes the repositories on its connection, for the writes that must commit together.
Callers hold no transaction across a network call: claim, commit, call, then record in a second one.

    connections.py    mailbox_connections (status and tokens stay in services/core/connections.py for now)
    subscriptions.py  subscriptions and subscription_deletions, as the API and the webhook's trust read them
    jobs.py           sync_jobs: back-syncs and back-fills
    sends.py          sends
    tenants.py        tenant_connections and shared_mailboxes
    oauth_states.py   oauth_states: the user's sign-in flows
    directory.py      accounts, users and user_addresses
    activity.py       engagements and match_decisions as the settings page summarises them (reads only)
"""
