"""The HTTP API's documentation at ``/api/docs``, served whole by the demo: it works
without internet and under the site's Content-Security-Policy (``security.py``).

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script.
Here Swagger UI's two files come from an installed package instead (``fastapi-offline``,
in the ``demo`` extra, ships a current Swagger UI that reads OpenAPI 3.1), served at
``/static/swagger-ui/``; and the page starts it with a static file,
``static/api-docs.js``, which reads the OpenAPI document's URL from the page. A static
file rather than a nonce or a hash for one inline script: every page then has the same
policy, and no page needs a policy of its own.

Without that package (an install without the ``demo`` extra's optional parts), the page
still works offline: it lists the API's operations from the OpenAPI document and links
the document itself.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

#: Swagger UI's files the page loads, and their media types.
SWAGGER_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
ASSETS_URL = "/static/swagger-ui"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class Site(Protocol):
    """What the docs page uses of the demo site (``demo.web.Demo``)."""

    def not_found(self, request: Request) -> Response: ...

    async def signed_in(self, request: Request) -> Any: ...

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response: ...


def swagger_ui_files() -> Path | None:
    """The installed folder holding ``SWAGGER_FILES``, or None when there is none."""
    try:
        folder = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    except ModuleNotFoundError:
        return None
    return folder if all((folder / name).is_file() for name in SWAGGER_FILES) else None


def operations(schema: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(METHOD, path, summary)`` of each operation of an OpenAPI document, in its
    order."""
    found = []
    for path, item in schema.get("paths", {}).items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                found.append((method.upper(), path, str(operation.get("summary", ""))))
    return found


def api_docs_routes(site: FastAPI, demo: Site, *, files: Path | None) -> list[Route]:
    """The page at ``/api/docs`` and, with ``files`` (``swagger_ui_files()``), the
    Swagger UI files it loads. To be routed before the demo's ``/static`` mount."""
    openapi_url = site.openapi_url or ""

    async def page(request: Request) -> Response:
        await demo.signed_in(request)  # the fallback page's header shows who is signed in
        if files is not None:
            return demo.render(
                request,
                "api_docs.html",
                openapi_url=openapi_url,
                assets=ASSETS_URL,
            )
        return demo.render(
            request,
            "api_docs_plain.html",
            openapi_url=openapi_url,
            operations=operations(site.openapi()),
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if files is None or name not in SWAGGER_FILES:
            return demo.not_found(request)
        return FileResponse(files / name, media_type=SWAGGER_FILES[name])

    routes = [Route("/api/docs", page, methods=["GET"])]
    if files is not None:
        routes.append(Route(f"{ASSETS_URL}/{{name}}", asset, methods=["GET"]))
    return routes
