"""The edges: PostgreSQL, Microsoft Graph and identity, Kafka, TLS, settings, the process runtime."""
