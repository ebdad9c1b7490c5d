"""The browser voice page: ``GET /`` and its static files under ``/static/``.

The page (``static/index.html``, ``static/voice.js``, ``static/capture-worklet.js``) is plain
ES modules, served as they are: no build step. It talks to ``/v1/realtime`` like any client.
"""

from __future__ import annotations

from pathlib import Path

from quart import Response, send_from_directory
from quart_trio import QuartTrio

STATIC = Path(__file__).resolve().parent / "static"


def register_page(app: QuartTrio) -> None:
    """Serve the page at ``/`` and its files at ``/static/<file>``."""
    # Quart's own ``/static/<filename>`` route serves the app's static folder: point it here.
    app.static_folder = str(STATIC)

    @app.route("/")
    async def page() -> Response:
        response = await send_from_directory(STATIC, "index.html")
        response.headers["Cache-Control"] = "no-cache"
        return response
