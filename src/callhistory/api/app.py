"""The ASGI application: routers, error bodies, shared state."""

from __future__ import annotations

import gc
import hashlib
import hmac
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InternalError, OperationalError
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import HTMLResponse, Response
from starlette.routing import Match
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callhistory import __version__, web
from callhistory.api import auth, calls, docs, people, statistics, storage
from callhistory.api.auth import HashGate, LoginThrottle
from callhistory.api.deps import HotLane
from callhistory.api.responses import JSONResponse
from callhistory.config import Settings
from callhistory.errors import ApiError
from callhistory.recordings import AccountRoots
from callhistory.schema import make_engine
from callhistory.web import pages

log = logging.getLogger("callhistory")


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


#: A hot-lane request running longer than this is slow work that leaves the lane (a page of the
#: list takes milliseconds; a sort of millions of calls, seconds). The lane is one request wide:
#: measured on PostgreSQL at 10M calls with `serve --workers 2`, 780 req/s one at a time per
#: process, 690 two at a time.
HOT_LANE_STUCK_SECONDS = 0.1

#: SQLSTATEs of a database that cannot serve now: connection exceptions (class 08, which Citus
#: raises for a worker it cannot reach), a server shutting down or starting, too many clients.
_UNAVAILABLE = ("08", "57P01", "57P02", "57P03", "53300")


def _unreachable(exc: DBAPIError) -> bool:
    """An outage rather than a fault of ours (a missing table is an OperationalError too)."""
    orig = exc.orig
    if isinstance(exc, InternalError):
        # Citus, on the first use of its cached connection to a worker that has restarted since
        # (SQLSTATE XX000); it reconnects on the next transaction.
        return str(orig).startswith("failure on connection marked as essential")
    if isinstance(orig, sqlite3.OperationalError):
        return str(orig).startswith(("database is locked", "unable to open"))
    state = getattr(orig, "sqlstate", None)
    return state is None or state.startswith(_UNAVAILABLE)  # None: no connection at all


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database (or, on Citus, the node holding the account's shard) cannot be reached: the
    transaction was rolled back, so nothing is half-written; the client may try again."""
    assert isinstance(exc, DBAPIError)
    if not _unreachable(exc):
        raise exc  # a 500 (ServerErrors)
    reason = (str(exc.orig).strip().splitlines() or [""])[0]
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, reason)
    return JSONResponse(
        {"message": "Service Unavailable"}, status_code=503, headers={"Retry-After": "5"}
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first)."""
    allowed = {"OPTIONS"}
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.add(method)
    return sorted(allowed)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    route = request.url.path.lstrip("/") or "/"  # Laravel's $request->path() of the root is "/"
    if exc.status_code == 405:
        allow = {"Allow": ", ".join(_allowed_methods(request))}
        if request.method == "OPTIONS":  # as Laravel: an empty 200 naming the methods
            return Response(status_code=200, headers=allow)
        message = f"The {request.method} method is not supported for route {route}."
        return JSONResponse({"message": message}, status_code=405, headers=allow)
    if exc.status_code == 404:
        message = f"The route {route} could not be found."
    else:
        message = str(exc.detail)
    return JSONResponse({"message": message}, status_code=exc.status_code, headers=exc.headers)


async def _request_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    # Routes parse their own input; this only guards against a malformed request FastAPI rejects.
    message = "The request is invalid."
    return JSONResponse({"message": message, "errors": {"request": [message]}}, status_code=422)


class ServerErrors:
    """Turns an unhandled error into Laravel's `500 {"message": "Server Error"}` and ends there.

    Starlette's own handler re-raises after answering, and uvicorn then closes the connection
    under a client that expects keep-alive (its next request fails with ECONNRESET). Here the
    500 is a complete response and the connection stays usable. An error after the response
    began (a broken stream) still propagates: that response cannot be completed.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = JSONResponse({"message": "Server Error"}, status_code=500)
            await response(scope, receive, send)


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """What the process built before serving (modules, the app, its schema) lives as long as it
    does: leave it out of the garbage collector's full passes, which otherwise walk all of it
    every few hundred requests (pauses of about 100 ms, bench/statistics.py's p99)."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        lifespan=_lifespan,
        title="callhistory",
        version=__version__,
        description=docs.DESCRIPTION,
        default_response_class=JSONResponse,
        docs_url=None,  # served below from the package's own Swagger UI files
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine or make_engine(settings.sqlalchemy_url)
    app.state.recordings = AccountRoots(settings.recordings_root, app.state.engine)
    app.state.login_throttle = LoginThrottle(
        app.state.engine, "email+ip", settings.login_max_attempts, settings.login_decay_seconds
    )
    app.state.login_ip_throttle = LoginThrottle(
        app.state.engine, "ip", settings.login_max_attempts_per_ip, settings.login_decay_seconds
    )
    app.state.hash_gate = HashGate(settings.login_hash_slots, settings.login_hash_wait_seconds)
    app.state.hot_lane = HotLane(width=1, stuck_after=HOT_LANE_STUCK_SECONDS)
    app.include_router(auth.router)
    app.include_router(calls.router)
    app.include_router(statistics.router)
    app.include_router(people.router)
    app.include_router(storage.router)
    app.mount("/static", StaticFiles(directory=web.STATIC), name="static")
    app.include_router(pages.router)
    app.add_middleware(
        SessionMiddleware,
        secret_key=hmac.new(settings.signing_key, b"web session", hashlib.sha256).hexdigest(),
        session_cookie="callhistory_session",
        max_age=pages.SESSION_MAX_AGE,
        same_site="lax",
        https_only=(settings.public_url or "").startswith("https://"),
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        vendor = f"/static/{web.SWAGGER_UI}"
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
            swagger_css_url=f"{vendor}/swagger-ui.css",
            swagger_favicon_url=f"{vendor}/favicon-32x32.png",
        )

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InternalError, _database_unavailable)
    app.add_middleware(ServerErrors)
    docs.install(app)
    return app
