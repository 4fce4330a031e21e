"""Microsoft Graph and identity-platform adapters: pure parsing and error classification apart from I/O."""
