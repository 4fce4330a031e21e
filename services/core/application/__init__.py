"""Use cases the entrypoints call: each takes its repositories (services/core/store, or in-memory fakes in
unit tests) and ports, decides, and leaves parsing input and shaping output to the caller."""
