"""The ASGI application: routers, error bodies, shared state."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine
from starlette.exceptions import HTTPException

from callhistory.api import auth, calls, docs, storage
from callhistory.api.auth import LoginThrottle
from callhistory.api.responses import JSONResponse
from callhistory.config import Settings
from callhistory.errors import ApiError
from callhistory.recordings import AccountRoots
from callhistory.schema import make_engine

log = logging.getLogger("callhistory")


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    route = request.url.path.lstrip("/")
    if exc.status_code == 404:
        message = f"The route {route} could not be found."
    elif exc.status_code == 405:
        message = f"The {request.method} method is not supported for route {route}."
    else:
        message = str(exc.detail)
    return JSONResponse({"message": message}, status_code=exc.status_code, headers=exc.headers)


async def _request_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    # Routes parse their own input; this only guards against a malformed request FastAPI rejects.
    return JSONResponse({"message": "The request is invalid."}, status_code=422)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"message": "Server Error"}, status_code=500)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="callhistory",
        version="1.0.0",
        description=docs.DESCRIPTION,
        default_response_class=JSONResponse,
    )
    app.state.settings = settings
    app.state.engine = engine or make_engine(settings.sqlalchemy_url)
    app.state.recordings = AccountRoots(settings.recordings_root, app.state.engine)
    app.state.login_throttle = LoginThrottle(
        settings.login_max_attempts, settings.login_decay_seconds
    )
    app.include_router(auth.router)
    app.include_router(calls.router)
    app.include_router(storage.router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(Exception, _server_error)
    docs.install(app)
    return app
