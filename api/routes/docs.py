"""``/docs``: Swagger UI from the installed ``swagger-ui-py`` package, so it works offline.

FastAPI's default page loads Swagger UI from a CDN, which a laptop without internet, a locked
down network or a strict Content-Security-Policy cannot reach. The package ships Swagger UI 5
(which renders the OpenAPI 3.1 documents FastAPI writes); only its static files are used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS: Final = "/docs/assets"


def swagger_ui_dir() -> Path:
    """The Swagger UI files inside the installed ``swagger-ui-py`` package."""
    import swagger_ui

    return Path(swagger_ui.__file__).resolve().parent / "static"


def mount(app: FastAPI) -> None:
    """Serve the docs page and its assets from this process (no route needs a key)."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_dir()), name="docs-assets")

    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    app.add_api_route("/docs", swagger_ui, include_in_schema=False, methods=["GET"])
