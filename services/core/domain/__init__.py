"""The rules and types of mailsync: pure, no I/O (tests/unit/test_layering.py)."""
