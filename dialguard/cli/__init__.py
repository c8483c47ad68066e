"""The `dialguard` command (console script `dialguard.cli:app`)."""

from dialguard.cli.main import app, main

__all__ = ["app", "main"]
