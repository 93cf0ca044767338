"""``create_app(collection)``: the FastAPI app of ``imagerec serve`` (page at ``/``, API at ``/api``, docs at ``/docs``).

Every error becomes JSON ``{"detail": "<one line>", "kind": "..."}`` with a fitting status: the page
shows ``detail`` as it is, so it must read well; unexpected errors are logged here, not sent.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from imagerec.ann import AnnIndexError
from imagerec.errors import ImagerecError, QueryError, StoreError
from imagerec.web.api import router
from imagerec.web.catalog import NotFound
from imagerec.web.services import Services
from imagerec.web.uploads import UploadError

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("imagerec.web")


def _error(status: int, kind: str, detail: str) -> JSONResponse:
    return JSONResponse({"detail": " ".join(str(detail).split()), "kind": kind}, status_code=status)


def _kind_and_status(exc: Exception) -> tuple[str, int]:
    if isinstance(exc, NotFound):
        return "not_found", 404
    if isinstance(exc, UploadError):
        return "upload", exc.status
    if isinstance(exc, AnnIndexError):
        return "no_ann_index", 409
    if isinstance(exc, QueryError):
        return ("no_ann_index" if "build-ann" in str(exc) else "query"), 400
    if isinstance(exc, StoreError):
        return "store", 503
    return "imagerec", 500


def _install_errors(app: FastAPI) -> None:
    async def known(request: Request, exc: Exception):
        kind, status = _kind_and_status(exc)
        return _error(status, kind, str(exc))

    async def http(request: Request, exc: HTTPException):
        return _error(exc.status_code, "http", exc.detail if isinstance(exc.detail, str) else str(exc.detail))

    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return _error(422, "invalid", f"bad request parameter: {problems}")

    async def unexpected(request: Request, exc: Exception):
        log.exception("internal error in %s", request.url.path)
        return _error(500, "internal", f"internal error ({type(exc).__name__}: {exc}); see the server's log")

    for cls in (NotFound, UploadError, ImagerecError):
        app.add_exception_handler(cls, known)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


def _install_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI served from the pinned ``swagger-ui-bundle-v2`` package (FastAPI's default uses a CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="imagerec API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


def create_app(collection) -> FastAPI:
    """The web app serving ``collection`` (an ``imagerec.open(...)`` Collection); closes nothing it did not open."""
    services = Services(collection)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        services.close()

    app = FastAPI(title="imagerec", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Browse a local image collection and explore similar images.")
    app.state.services = services
    _install_errors(app)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    _install_docs(app)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app
