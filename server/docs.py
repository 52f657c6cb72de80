"""API docs that work offline: Swagger UI at /docs and ReDoc at /redoc, with every asset served from here.

FastAPI's own pages load their scripts from a CDN, so on a network without the
internet they stay blank. The assets come from the pinned ``fastapi-offline``
package, which ships the Swagger UI and ReDoc bundles; only its files are used.
"""

from __future__ import annotations

import html
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_PATH = "/static-docs"

#: Swagger UI's defaults would send the contract to an online validator for its badge.
_SWAGGER_UI_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - Swagger UI</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" href="{assets}/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script>
// The contract names the service's usual address; "Try it out" must reach the
// service that serves this page, so its own origin is listed first.
fetch("{openapi_url}").then(function (answer) {{ return answer.json(); }}).then(function (contract) {{
  contract.servers = [{{url: window.location.origin, description: "this service"}}].concat(contract.servers || []);
  window.ui = SwaggerUIBundle({{
    spec: contract,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    displayOperationId: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  }});
}});
</script>
</body>
</html>
"""


#: Nothing on the docs pages may come from another host, even where a bundle
#: names one (ReDoc's sidebar links its logo from a CDN): the browser refuses it.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:"
)
_DOCS_HEADERS = {"Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY}
#: ReDoc's bundle shows a logo from a CDN in its sidebar; the page shows the local favicon instead.
_REDOC_REMOTE_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_SCRIPT_PATH = "/docs-assets/redoc.standalone.js"


def redoc_script() -> bytes:
    """ReDoc's bundle, its one remote image pointed at this service's own favicon."""
    bundle = (DOCS_ASSETS / "redoc.standalone.js").read_text(encoding="utf-8")
    return bundle.replace(_REDOC_REMOTE_LOGO, f"{ASSETS_PATH}/favicon.png").encode()


def add_offline_docs(app: FastAPI, title: str) -> None:
    """Serve /docs, /redoc and their assets from this service; nothing is loaded from another host."""
    app.mount(ASSETS_PATH, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redoc_bundle = redoc_script()
    swagger_ui_page = _SWAGGER_UI_PAGE.format(title=html.escape(title), assets=ASSETS_PATH, openapi_url=openapi_url)

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger_ui_page, headers=_DOCS_HEADERS)

    @app.get(REDOC_SCRIPT_PATH, include_in_schema=False)
    async def redoc_standalone() -> Response:
        return Response(redoc_bundle, media_type="text/javascript")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=REDOC_SCRIPT_PATH,
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(_DOCS_HEADERS)
        return page
