"""The mailbox aggregate: mailbox_connections (status, tokens, poll schedule, upkeep, tenant mode),
connection_events, delta_cursors."""
