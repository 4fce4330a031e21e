"""Use cases the entrypoints call: each takes its repositories (services/core/adapters/store, or in-memory
fakes in unit tests) and ports (Graph, identity, the publisher), applies the domain's rules, and leaves parsing
input and shaping output to the caller. No SQL here, no aiohttp.web, no aiokafka (tests/unit/test_layering.py,
test_persistence_boundary.py)."""
