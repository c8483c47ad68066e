"""`dialguard web`: run the console and the API."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def web(host: Optional[str] = typer.Option(None, "--host", help="default DIALGUARD_WEB_HOST or 127.0.0.1"),
            port: Optional[int] = typer.Option(None, "--port", help="default DIALGUARD_WEB_PORT or 19102")):
        """The console (HTML, sessions) and the API (/api/v1, tokens) in one service; docs/WEB.md."""
        from dialguard.web.app import run
        run(host, port)
