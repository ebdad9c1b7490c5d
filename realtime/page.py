"""The browser voice page: ``GET /`` and its files at ``GET /static/<file>``.

The page (``static/index.html``, ``static/voice.js``, ``static/capture-worklet.js``) is plain
ES modules, served as they are: no build step. It talks to ``/v1/realtime`` like any client.
"""

from __future__ import annotations

from pathlib import Path

from quart import Response, send_from_directory
from quart_trio import QuartTrio

STATIC = Path(__file__).resolve().parent / "static"


async def _static(filename: str) -> Response:
    response = await send_from_directory(STATIC, filename)
    # revalidate every time (a cheap 304): a page and its modules must never come from two versions
    response.cache_control.no_cache = True
    response.cache_control.max_age = None
    response.expires = None
    return response


def register_page(app: QuartTrio) -> None:
    """Serve the page at ``/`` and its files at ``/static/<file>``."""

    async def page() -> Response:
        return await _static("index.html")

    app.add_url_rule("/", "page", page)
    # Quart gives every app the rule ``/static/<filename>`` (endpoint ``static``); the page's
    # files take it over rather than adding a second rule for the same paths.
    app.static_folder = str(STATIC)
    app.view_functions["static"] = _static
