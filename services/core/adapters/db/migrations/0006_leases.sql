-- Leases instead of row locks held across network calls: a token refresh and a subscription renewal are
-- claimed by a short transaction that writes a lease, committed, executed, then recorded in another
-- short transaction. An expired lease (a crashed replica) is simply claimed again.
ALTER TABLE mailbox_connections ADD COLUMN refresh_lease_until timestamptz;
ALTER TABLE subscriptions ADD COLUMN renew_lease_until timestamptz;
