"""Authentication routes (the contract's sibling "Auth" page) and the login throttle."""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from callhistory import accounts
from callhistory.api import docs
from callhistory.api.deps import ConnDep, JsonBodyDep, PrincipalDep, SettingsDep
from callhistory.api.responses import JSONResponse
from callhistory.config import Settings
from callhistory.errors import ApiError, ValidationErrors
from callhistory.models import UserType
from callhistory.resources import laravel_timestamp

router = APIRouter(prefix="/api/v1/auth", tags=["Auth"])

T = TypeVar("T")
BAD_CREDENTIALS = "These credentials do not match our records."


def _precise_now() -> datetime:
    """Naive UTC with microseconds: a failure stored at whole seconds could leave a window up to
    a second early (a 1 s decay then forgot a failure 50 ms old, failing a test)."""
    return datetime.now(UTC).replace(tzinfo=None)


class LoginThrottle:
    """Failed logins per key within a sliding decay window, kept in the database: every server
    process (`serve --workers N`) counts the same failures. Keys are stored hashed."""

    def __init__(self, engine: Engine, scope: str, max_attempts: int, decay_seconds: int):
        self.engine, self.scope = engine, scope
        self.max_attempts, self.decay_seconds = max_attempts, decay_seconds

    def _key(self, key: str) -> str:
        return hashlib.sha256(f"{self.scope}\n{key}".encode()).hexdigest()

    def retry_after(self, key: str) -> int | None:
        """Seconds to wait when the key is locked out, else None."""
        now = _precise_now()
        window = timedelta(seconds=self.decay_seconds)
        with self.engine.connect() as conn:
            hits = accounts.login_failures_since(
                conn, self._key(key), now - window, self.max_attempts
            )
        if len(hits) < self.max_attempts:
            return None
        return max(math.ceil((hits[-1] + window - now).total_seconds()), 1)

    def hit(self, key: str) -> None:
        now = _precise_now()
        with self.engine.begin() as conn:
            accounts.record_login_failure(
                conn, self._key(key), now, now - timedelta(seconds=self.decay_seconds)
            )

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            accounts.clear_login_failures(conn, self._key(key))


class HashGate:
    """At most `slots` password hashes at once in this process (argon2 is memory-hard by design:
    ~19 MiB and a core each), on threads of their own. A login waits up to `wait_seconds` for a
    slot, in the event loop, holding no worker thread, then gets a 429: a flood of logins cannot
    starve the API. Own threads, because each thread that ever hashed keeps its ~19 MiB in its
    malloc arena: on the shared pool of 40 that grew the server by ~100 MB under a flood."""

    def __init__(self, slots: int, wait_seconds: float):
        self._slots = threading.BoundedSemaphore(slots)
        self._threads = ThreadPoolExecutor(slots, thread_name_prefix="password-hash")
        self.wait_seconds = wait_seconds

    async def acquire(self) -> bool:
        deadline = time.monotonic() + self.wait_seconds
        while not self._slots.acquire(blocking=False):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def release(self) -> None:
        self._slots.release()

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function` on a hashing thread (call between acquire and release)."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)


def client_ip(request: Request) -> str:
    """The client's address (behind a trusted proxy, the one it forwarded; see TRUSTED_PROXIES)."""
    return request.client.host if request.client else "-"


def _login(engine: Engine, email: str, password: str, token_name: str) -> str | None:
    with engine.begin() as conn:
        user_id = accounts.authenticate(conn, email, password)
        return None if user_id is None else accounts.create_token(conn, user_id, name=token_name)


def _success(result: Any, message: str) -> JSONResponse:
    return JSONResponse({"status": "success", "code": 200, "result": result, "message": message})


def string_field(body: dict[str, Any], name: str, errors: ValidationErrors) -> str:
    value = body.get(name)
    attribute = name.replace("_", " ")
    if value is None or value == "":
        errors.add(name, f"The {attribute} field is required.")
        return ""
    if not isinstance(value, str):
        errors.add(name, f"The {attribute} field must be a string.")
        return ""
    return value


def _retry_after(
    throttle: LoginThrottle, key: str, ip_throttle: LoginThrottle, ip: str
) -> int | None:
    return throttle.retry_after(key) or ip_throttle.retry_after(ip)


async def sign_in(
    request: Request, settings: Settings, email: str, password: str, token_name: str
) -> str:
    """A new token for these credentials, behind the login throttles (per email and address, and
    per address) and the hashing gate. ApiError 422 (bad credentials) or 429. Shared by the API's
    login and the web page's."""
    throttle: LoginThrottle = request.app.state.login_throttle
    ip_throttle: LoginThrottle = request.app.state.login_ip_throttle
    gate: HashGate = request.app.state.hash_gate
    ip = client_ip(request)
    key = f"{email.strip().lower()}|{ip}"
    wait = await run_in_threadpool(_retry_after, throttle, key, ip_throttle, ip)
    if wait is not None:
        # A tarpit: a locked-out client that retries at once is answered only after a pause
        # that costs a coroutine, not a thread or a core, so a flood cannot keep the CPU busy.
        await asyncio.sleep(settings.login_lockout_delay_seconds)
    if wait is not None or not await gate.acquire():
        raise ApiError(429, "Too Many Attempts.", headers={"Retry-After": str(wait or 1)})
    try:
        token = await gate.run(_login, request.app.state.engine, email, password, token_name)
    finally:
        gate.release()
    if token is None:
        await run_in_threadpool(throttle.hit, key)
        await run_in_threadpool(ip_throttle.hit, ip)
        raise ApiError(422, BAD_CREDENTIALS, {"email": [BAD_CREDENTIALS]})
    await run_in_threadpool(throttle.clear, key)
    return token


@router.post(
    "/login",
    summary="Exchange email and password for a bearer token",
    response_model=docs.LoginResult,
    responses=docs.errors(422, 429),
    openapi_extra={"requestBody": docs.LOGIN_BODY, "security": []},
)
async def login(request: Request, body: JsonBodyDep, settings: SettingsDep) -> JSONResponse:
    """Async on purpose: the throttles and the wait for a hashing slot cost no worker thread;
    only the hash and its queries run in the thread pool."""
    body = body if isinstance(body, dict) else {}
    errors = ValidationErrors()
    email = string_field(body, "email", errors)
    if email and accounts.EMAIL.fullmatch(email) is None:
        errors.add("email", "The email field must be a valid email address.")
    password = string_field(body, "password", errors)
    errors.raise_if_any()

    token = await sign_in(request, settings, email, password, token_name="login")
    return _success({"access_token": token}, "User successfully authenticated")


@router.get(
    "/me",
    summary="The user the token belongs to",
    response_model=docs.MeResult,
    responses=docs.errors(401),
)
def me(principal: PrincipalDep, conn: ConnDep) -> JSONResponse:
    user = accounts.get_user(conn, principal.user_id)
    user_type = UserType(user.type)
    return _success(
        {
            "id": user.id,
            "name": user.name,
            "email": user.email,
            "type": {"number": int(user_type), "name": user_type.name},
            "created_at": laravel_timestamp(user.created_at),
        },
        "User successfully retrieved",
    )


@router.post(
    "/logout",
    summary="Revoke the token in use",
    response_model=docs.EmptyResult,
    responses=docs.errors(401),
)
def logout(principal: PrincipalDep, conn: ConnDep) -> JSONResponse:
    accounts.revoke_token(conn, principal.token_id)
    return _success(None, "User successfully logged out")


@router.post(
    "/change-password",
    summary="Change the password; the user's other tokens are revoked",
    response_model=docs.EmptyResult,
    responses=docs.errors(401, 422),
    openapi_extra={"requestBody": docs.CHANGE_PASSWORD_BODY},
)
def change_password(body: JsonBodyDep, principal: PrincipalDep, conn: ConnDep) -> JSONResponse:
    body = body if isinstance(body, dict) else {}
    errors = ValidationErrors()
    old_password = string_field(body, "old_password", errors)
    password = string_field(body, "password", errors)
    if password and len(password) < 6:
        errors.add("password", "The password field must be at least 6 characters.")
    if password and body.get("password_confirmation") != password:
        errors.add("password", "The password field confirmation does not match.")
    errors.raise_if_any()
    user = accounts.get_user(conn, principal.user_id)
    if not accounts.verify_password(user.password, old_password):
        message = "The old password is incorrect."
        raise ApiError(422, message, {"old_password": [message]})
    accounts.set_password(conn, principal.user_id, password)
    accounts.revoke_other_tokens(conn, principal.user_id, keep_token_id=principal.token_id)
    return _success(None, "Password successfully changed")
