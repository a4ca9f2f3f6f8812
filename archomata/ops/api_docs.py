"""`GET /api/v1/docs`: the OpenAPI document as an interactive reference (Swagger UI).

Swagger UI's own dist files come from the `swagger-ui-py` package (installed with the
service, located without importing its Python) and are served here, under
`/api/v1/docs/assets/`: nothing is fetched from a CDN, at build time or at run time. Only
the files the page uses are served, looked up by name in a fixed table (no path from the
request ever reaches the file system).

The page's Content-Security-Policy allows its own assets and nothing else: scripts and
styles from this origin only (the page's own start-up script is an asset too, so no
inline script), the document fetched from this origin, images from this origin or the
`data:` URIs of Swagger UI's stylesheet, no frames, forms, plugins or base URL.

"Try it out" is offered for GET only: a state-changing request from this page carries
this service's origin, which is not one of ARCHOMATA_FRONTEND_ORIGINS (CSRF, API.md §1),
so it would only ever answer 403.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web

from archomata.access.guards import operations
from archomata.errors import NotFound
from archomata.web.openapi import doc

routes = web.RouteTableDef()

DOCS_PATH = "/api/v1/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
SWAGGER_UI_PACKAGE = "swagger_ui"  # the `swagger-ui-py` distribution

CSP = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))

START = """\
// Archomata's API reference: Swagger UI on the service's own OpenAPI document.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // A state-changing call from this page carries this service's origin, which the
    // CSRF check refuses (it is no frontend origin): offered for GET only.
    supportedSubmitMethods: ["get"],
    validatorUrl: null,  // the default badge is an image from another site
  });
});
"""

PAGE = f"""\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Archomata API reference</title>
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script src="{ASSETS_PATH}/start.js"></script>
</body>
</html>
"""

# The files the page uses, by the name it asks for: Swagger UI's from the package.
PACKAGED = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}


def swagger_ui_dir() -> Path:
    """The folder of Swagger UI's dist files in the installed `swagger-ui-py` (found
    without importing the package, whose Python the service does not use)."""
    spec = importlib.util.find_spec(SWAGGER_UI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: pip install the service")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@routes.get(DOCS_PATH)
@operations
@doc("This reference, interactive (Swagger UI, HTML)")
async def api_reference(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})


@routes.get(ASSETS_PATH + "/{name}")
@operations
@doc("A file of the interactive reference (Swagger UI's, served by the service itself)")
async def api_reference_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == "start.js":
        return web.Response(text=START, content_type="text/javascript",
                            headers={"Cache-Control": "no-cache"})
    content_type = PACKAGED.get(name)
    if content_type is None:
        raise NotFound("No such file.")
    # no-cache: revalidated (ETag, Last-Modified) on each visit, so an upgraded package
    # is seen at once; an unchanged file costs a 304.
    return web.FileResponse(swagger_ui_dir() / name, headers={
        "Content-Type": content_type, "Cache-Control": "no-cache"})
