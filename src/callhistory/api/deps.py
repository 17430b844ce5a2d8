"""Typed dependencies of the routes: settings, a connection, the authenticated principal."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, TypeVar

import anyio
import orjson
from fastapi import Depends, Request
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool

from callhistory import accounts
from callhistory.accounts import Principal
from callhistory.config import Settings
from callhistory.errors import UNAUTHENTICATED, UNAUTHORIZED, ApiError
from callhistory.models import ABILITY_CALLS_READ, ABILITY_CALLS_WRITE
from callhistory.signing import recording_url

T = TypeVar("T")

# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in the thread
# pool, and each such hop costs more than the work. Those that touch the database stay `def`.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_connection(request: Request) -> Iterator[Connection]:
    """One transaction per request: committed when the route returns, rolled back on error.

    `scope="function"` below makes the commit happen before the response is sent, so a client
    that got its 201 can read what it wrote.
    """
    engine: Engine = request.app.state.engine
    with engine.begin() as conn:
        yield conn


SettingsDep = Annotated[Settings, Depends(get_settings)]
ConnDep = Annotated[Connection, Depends(get_connection, scope="function")]


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def get_principal(request: Request, conn: ConnDep) -> Principal:
    token = bearer_token(request)
    principal = accounts.find_principal(conn, token) if token else None
    if principal is None:
        raise ApiError(401, UNAUTHENTICATED)
    accounts.touch_token(conn, principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def allowed(principal: Principal, ability: str) -> Principal:
    """The principal if it may do `ability`, else 403."""
    if not principal.can(ability):
        raise ApiError(403, UNAUTHORIZED)
    return principal


class HotLane:
    """The hottest reads of a process, `width` at a time (one in `create_app`).

    Sixteen requests on sixteen pool threads spend more CPU handing the GIL to each other than
    answering (measured, `serve --workers 1` on 50k calls: 371 req/s with the pool's 40 threads,
    633 req/s one at a time). A request waits for the lane in the event loop, in turn, costing no
    thread. One still running after `stuck_after` seconds is slow work (a sort of millions of
    rows): it leaves the lane, to finish on its thread, and the next request enters.

    One lane per event loop: uvicorn runs one loop per process, but an app can be driven from
    several (each of the tests' clients has its own), and a limiter wakes its waiters only on the
    loop it belongs to: shared, a request on another loop waited forever."""

    def __init__(self, width: int, stuck_after: float):
        self.width, self.stuck_after = width, stuck_after
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter]
        self._lanes = weakref.WeakKeyDictionary()

    async def run(self, function: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes[loop] = anyio.CapacityLimiter(self.width)
        borrower = object()
        await lane.acquire_on_behalf_of(borrower)
        inside = True

        def leave() -> None:
            nonlocal inside
            if inside:
                inside = False
                lane.release_on_behalf_of(borrower)

        timer = loop.call_later(self.stuck_after, leave)
        try:
            return await run_in_threadpool(function)
        finally:
            timer.cancel()
            leave()


async def in_one_trip(
    request: Request, ability: str, handler: Callable[[Connection, Principal], T]
) -> T:
    """Authenticate, authorize and run `handler` in one transaction on one thread-pool thread,
    in the process's hot lane.

    For the hottest reads: as dependencies, the connection, the principal and the route each take
    a trip to the thread pool (four hops, each a handful of thread switches); here one does."""

    def run() -> T:
        engine: Engine = request.app.state.engine
        with engine.begin() as conn:
            return handler(conn, allowed(get_principal(request, conn), ability))

    lane: HotLane = request.app.state.hot_lane
    return await lane.run(run)


def require(ability: str) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: PrincipalDep) -> Principal:
        return allowed(principal, ability)

    return check


ReaderDep = Annotated[Principal, Depends(require(ABILITY_CALLS_READ))]
WriterDep = Annotated[Principal, Depends(require(ABILITY_CALLS_WRITE))]


def base_url(request: Request, settings: Settings) -> str:
    """PUBLIC_URL when set, else the URL the request came in on."""
    return settings.public_url or str(request.base_url).rstrip("/")


async def get_recording_url(
    request: Request, settings: SettingsDep, principal: PrincipalDep
) -> Callable[[str], str]:
    """Signs the recordings of the principal's account (FastAPI resolves the principal once per
    request, however many dependencies ask for it)."""
    return recording_signer(request, settings, principal.account_id)


def recording_signer(request: Request, settings: Settings, account_id: int) -> Callable[[str], str]:
    """Signed links to the account's recordings, as the API and the pages give them."""
    base = base_url(request, settings)
    key, ttl = settings.signing_key, settings.recording_url_ttl
    return lambda recording: recording_url(base, account_id, recording, key, ttl)


RecordingUrlDep = Annotated[Callable[[str], str], Depends(get_recording_url)]


#: Far above 1000 calls (~0.5 MB); anything larger is refused before it is read whole.
MAX_BODY_BYTES = 5 * 1024 * 1024


async def json_body(request: Request) -> Any:
    """The parsed JSON body, or None when it is not JSON (validation then says so)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "The request body is too large.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "The request body is too large.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


JsonBodyDep = Annotated[Any, Depends(json_body)]
