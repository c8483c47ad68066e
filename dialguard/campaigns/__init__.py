"""Dialer campaigns: leads in PostgreSQL, lead import, CLI (issue 7)."""
