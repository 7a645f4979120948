"""SSH adapter: remote execution with pinned host keys (asyncssh)."""
