"""The manager's pages: log in, the call list, log out. Server-rendered (Jinja2) from the same
query, store, pagination and resources code as the API: a page is another renderer of the same
query, never a second implementation of a filter.

The session is a signed, HttpOnly, SameSite=Lax cookie (Starlette's SessionMiddleware) that holds
a personal access token of the user (named "web"), so a page is authorised exactly like the API:
revoking the token, disabling the user or logging out ends the session. Every POST carries the
session's CSRF token.
"""

from __future__ import annotations

import csv
import hmac
import io
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response, StreamingResponse

from callhistory import (
    accounts,
    cdrstore,
    crmstore,
    pagination,
    phpquery,
    query,
    resources,
    store,
)
from callhistory.accounts import Principal
from callhistory.api.auth import sign_in
from callhistory.api.calls import path_id
from callhistory.api.deps import ConnDep, SettingsDep, recording_signer
from callhistory.errors import ApiError
from callhistory.models import ABILITY_CALLS_WRITE, CallStatus, CallType
from callhistory.stats import params as stats_params
from callhistory.stats import report
from callhistory.stats import store as stats_store
from callhistory.web import TEMPLATES, i18n, xlsx

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=TEMPLATES)

#: The session's lifetime in seconds (the cookie's Max-Age).
SESSION_MAX_AGE = 14 * 24 * 3600
MAX_FORM_BYTES = 16 * 1024
TOO_MANY = "Too many attempts. Wait a minute and try again."
ENTER_BOTH = "Enter your email and password."
#: A person looks for the latest calls first (the API's default is by id).
DEFAULT_SORT = "-datetime"
#: How often the live call list fetches its page again, in seconds.
LIVE_SECONDS = 5


def _render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """A page in the person's language (see i18n)."""
    texts = i18n.Texts(i18n.choose(request))
    return templates.TemplateResponse(
        request, name, {**context, **texts.context()}, status_code=status_code
    )


@router.get("/language")
def set_language(request: Request) -> Response:
    """Switch the pages' language (`?lang=uz|ru|en`), remembered for a year, and go back."""
    chosen = request.query_params.get("lang", "")
    response = RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    if chosen in i18n.LANGUAGES:
        response.set_cookie(
            i18n.COOKIE, chosen, max_age=365 * 24 * 3600, httponly=True, samesite="lax"
        )
    return response


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form, first value of each field; 403 unless its CSRF token is the
    session's."""
    body = await request.body()
    fields = {
        k: v[0] for k, v in parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace")).items()
    }
    expected = request.session.get("csrf")
    given = fields.get("csrf", "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected, given):
        raise ApiError(403, "This action is unauthorized.")
    return fields


def _principal(request: Request, conn: Connection) -> Principal | None:
    token = request.session.get("token")
    return accounts.find_principal(conn, token) if isinstance(token, str) else None


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)


def _safe_next(value: str | None) -> str:
    """Only a path on this site (never `//host` or a scheme): no open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


@router.get("/login")
def login_page(request: Request) -> Response:
    return _render_login(request, None, "", request.query_params.get("next"), 200)


def _render_login(
    request: Request, error: str | None, email: str, next_: str | None, status: int
) -> Response:
    context = {
        "csrf": csrf_token(request),
        "error": error,
        "email": email,
        "next": _safe_next(next_),
    }
    return _render(request, "login.html", context, status_code=status)


@router.post("/login")
async def login_submit(request: Request, settings: SettingsDep) -> Response:
    fields = await _form(request)
    email, password = fields.get("email", "").strip(), fields.get("password", "")
    next_ = fields.get("next")
    if not email or not password:
        return _render_login(request, ENTER_BOTH, email, next_, 422)
    try:
        token = await sign_in(request, settings, email, password, token_name="web")
    except ApiError as exc:
        message = exc.message if exc.status == 422 else TOO_MANY
        return _render_login(request, message, email, next_, exc.status)
    old = request.session.get("token")
    if isinstance(old, str):
        await run_in_threadpool(_revoke, request, old)
    request.session.clear()
    request.session["token"] = token
    csrf_token(request)  # a new one for the new session
    return RedirectResponse(_safe_next(next_), status_code=303)


def _revoke(request: Request, token: str) -> None:
    with request.app.state.engine.begin() as conn:
        principal = accounts.find_principal(conn, token)
        if principal is not None:
            accounts.revoke_token(conn, principal.token_id)


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _form(request)
    token = request.session.get("token")
    if isinstance(token, str):
        await run_in_threadpool(_revoke, request, token)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _list_params(request: Request) -> dict[str, Any]:
    """The query string as the API reads it, minus the form's empty fields (an empty select
    means "any", where the API would call `filter[type]=` invalid), newest first by default."""
    params = phpquery.parse(request.scope.get("query_string", b""))
    filters = params.get("filter")
    if isinstance(filters, dict):
        kept = {k: v for k, v in filters.items() if v not in ("", None)}
        if kept:
            params["filter"] = kept
        else:
            del params["filter"]
    params = {k: v for k, v in params.items() if v not in ("", None)}
    params.setdefault("sort", DEFAULT_SORT)
    return params


@router.get("/")
def calls_page(request: Request, settings: SettingsDep, conn: ConnDep) -> Response:
    principal = _principal(request, conn)
    if principal is None:
        return _to_login(request)
    params = _list_params(request)
    error = None
    try:
        call_query = query.parse(params, principal.timezone)
    except ApiError as exc:
        error, call_query, params = exc.message, query.CallQuery(), {}
    total, rows, integrations = store.list_page(conn, principal.scope, call_query)
    user = accounts.get_user(conn, principal.user_id)
    signed = recording_signer(request, settings, principal.account_id)
    calls = [
        resources.call_index(row, integrations[row.id], principal.timezone, signed) for row in rows
    ]
    page = pagination.envelope(
        calls, total=total, page=call_query.page, per_page=call_query.per_page, path="/",
        params=params,
    )  # fmt: skip
    filters = params.get("filter") if isinstance(params.get("filter"), dict) else {}
    context = {
        "csrf": csrf_token(request),
        "user": user,
        "page": page,
        "error": error,
        "filters": filters,
        "sort": params.get("sort", ""),
        "per_page": call_query.per_page,
        "types": [(str(int(t)), t.label) for t in CallType],
        "statuses": [(str(int(s)), s.label) for s in CallStatus],
        "sort_link": lambda column: _sort_link(params, column),
        "presets": _presets(params, principal.timezone),
        "durations": DURATIONS,
        # The unfiltered first page, newest first, shows new calls as they come (live.js).
        "live": LIVE_SECONDS
        if not filters and call_query.page == 1 and params.get("sort") == DEFAULT_SORT
        else None,
    }
    return _render(request, "calls.html", context)


@router.get("/calls/{call}")
def call_page(call: str, request: Request, settings: SettingsDep, conn: ConnDep) -> Response:
    """One call: every field, its CRM rows and the recording player."""
    principal = _principal(request, conn)
    if principal is None:
        return _to_login(request)
    call_pk = path_id(call)
    row = store.get(conn, principal.scope, call_pk) if call_pk is not None else None
    user = accounts.get_user(conn, principal.user_id)
    if row is None:
        context: dict[str, Any] = {"csrf": csrf_token(request), "user": user, "call": None}
        return _render(request, "call.html", context, status_code=404)
    integrations = store.integrations_for(conn, principal.account_id, [row.id])[row.id]
    signed = recording_signer(request, settings, principal.account_id)
    legs = cdrstore.legs_of_call(conn, principal.account_id, row.id)
    shown = resources.call_show(row, integrations, principal.timezone, signed, legs)
    context = {
        "csrf": csrf_token(request),
        "user": user,
        "call": shown,
        "can_retry": principal.can(ABILITY_CALLS_WRITE),
    }
    return _render(request, "call.html", context)


@router.post("/calls/{call}/integrations/{integration}/retry")
async def retry_sync(call: str, integration: str, request: Request) -> Response:
    """The call page's "Retry sync" button: a failed CRM row back in the queue (what the API's
    retry does; admins only), then back to the call."""
    await _form(request)
    return await run_in_threadpool(_retry_sync, request, call, integration)


def _retry_sync(request: Request, call: str, integration: str) -> Response:
    with request.app.state.engine.begin() as conn:
        principal = _principal(request, conn)
        if principal is None:
            return _to_login(request)
        if not principal.can(ABILITY_CALLS_WRITE):
            raise ApiError(403, "This action is unauthorized.")
        call_pk, row_id = path_id(call), path_id(integration)
        row = store.get(conn, principal.scope, call_pk) if call_pk is not None else None
        found = row and row_id and crmstore.find_row(conn, principal.account_id, row.id, row_id)
        if not found:
            raise ApiError(404, "Integration not found.")
        if found.status == "failed":
            crmstore.requeue(conn, principal.account_id, found.id)
    return RedirectResponse(f"/calls/{call_pk}", status_code=303)


#: The list form's duration choices: the API's `filter[duration]` value and its label.
DURATIONS = ((">30", "> 0:30"), (">60", "> 1:00"), (">300", "> 5:00"), (">900", "> 15:00"))


def _presets(params: dict[str, Any], tz: ZoneInfo) -> list[tuple[str, str, bool]]:
    """Today, yesterday and this week (from Monday) in the account's zone: (label, link, chosen),
    each keeping the other filters and the sort."""
    today = datetime.now(tz).date()
    given = params.get("filter")
    filters: dict[str, Any] = given if isinstance(given, dict) else {}
    found = []
    for label, start, end in (
        ("Today", today, today),
        ("Yesterday", today - timedelta(days=1), today - timedelta(days=1)),
        ("This week", today - timedelta(days=today.weekday()), today),
    ):
        period = {"from": f"{start:%Y-%m-%d}", "to": f"{end:%Y-%m-%d}"}
        link = pagination.page_url("/", {**params, "filter": {**filters, **period}}, 1)
        chosen = filters.get("from") == period["from"] and filters.get("to") == period["to"]
        found.append((label, link, chosen))
    return found


def _sort_link(params: dict[str, Any], column: str) -> str:
    """The list sorted by `column`: ascending, or descending when it already is ascending."""
    current = params.get("sort", "")
    wanted = f"-{column}" if current == column else column
    return pagination.page_url("/", {**params, "sort": wanted}, 1)


#: The dashboard's period when none is asked for: the last seven days, today included.
DASHBOARD_DAYS = 7


@router.get("/dashboard")
def dashboard_page(request: Request, conn: ConnDep) -> Response:
    """The period at a glance, from the Statistics API's own functions."""
    principal = _principal(request, conn)
    if principal is None:
        return _to_login(request)
    tz = principal.timezone
    today = datetime.now(tz).date()
    default = {"from": f"{today - timedelta(days=DASHBOARD_DAYS - 1)}", "to": f"{today}"}
    asked = {name: request.query_params.get(name) or default[name] for name in default}
    period = {**asked, "per_page": "10"}
    direction = request.query_params.get("direction", "all")
    if direction not in dict(report.DIRECTIONS):
        direction = "all"
    error = None
    try:
        stats_query = stats_params.parse(period, tz, stats_params.DAY_LIMIT, paged=True)
    except ApiError as exc:
        error, period = exc.message, {**default, "per_page": "10"}
        stats_query = stats_params.parse(period, tz, stats_params.DAY_LIMIT, paged=True)
    account = principal.scope
    user = accounts.get_user(conn, principal.user_id)
    config, _ = accounts.pbx_settings(conn, principal.account_id)
    counts = report.calls_count(stats_store.counts(conn, account, stats_query, tz))
    days = report.by_period(
        stats_store.local_counts(conn, account, stats_query, tz, report.DAY), "day"
    )
    hours = stats_store.local_counts(conn, account, stats_query, tz, report.HOUR)
    numbers = stats_store.by_number(conn, account, stats_query, tz)
    users = report.by_users(numbers, config.is_extension)
    missed, missed_total = stats_store.unreturned_page(conn, account, stats_query, tz)
    context = {
        "csrf": csrf_token(request),
        "user": user,
        "error": error,
        "period": period,
        "counts": counts,
        "chart": _day_chart(days, direction),
        "direction": direction,
        "directions": [
            (name, pagination.page_url("/dashboard", {**asked, "direction": name}, 1))
            for name in ("all", *(name for name, _ in report.DIRECTIONS))
        ],
        "heat": report.heatmap(hours),
        "users": users,
        "missed": report.missed_rows(missed, tz),
        "missed_total": missed_total,
    }
    return _render(request, "dashboard.html", context)


def _day_chart(series: dict[str, Any], direction: str = "all") -> list[dict[str, Any]]:
    """Per local day: the calls and the missed ones of one direction (or all), bar heights in %."""
    every: dict[str, int] = {}
    missed: dict[str, int] = {}
    for name, buckets in series.items():
        if direction not in ("all", name):
            continue
        for bucket in buckets["all"]:
            every[bucket["date_day"]] = every.get(bucket["date_day"], 0) + bucket["call_count"]
        for bucket in buckets["not_answered"]:
            missed[bucket["date_day"]] = missed.get(bucket["date_day"], 0) + bucket["call_count"]
    top = max(every.values(), default=0) or 1
    return [
        {
            "day": day,
            "calls": every[day],
            "missed": missed.get(day, 0),
            "height": round(100 * every[day] / top, 1),
            "missed_height": round(100 * missed.get(day, 0) / top, 1),
        }
        for day in sorted(every)
    ]


EXPORT_COLUMNS = (
    "id", "date_time", "direction", "status", "src", "dst", "external_number", "duration",
    "conversation", "disposition", "recorded",
)  # fmt: skip


def _export(
    request: Request, conn: Connection
) -> tuple[Iterator[list[tuple[Any, ...]]], str] | None:
    """The list's calls under the same filters and sort, every page, as batches of export rows
    streamed from a server-side cursor (any number of rows in the same memory; times in the
    account's zone), and the file's name without its extension. None without a session (the
    caller sends the person to log in); ApiError 422 for bad filters (as the API)."""
    principal = _principal(request, conn)
    if principal is None:
        return None
    call_query = query.parse(_list_params(request), principal.timezone)
    engine, tz, scope = request.app.state.engine, principal.timezone, principal.scope

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        with engine.connect() as conn:
            for batch in store.stream(conn, scope, call_query):
                yield [
                    (
                        row.id, resources.local_time(row.started_at, tz),
                        CallType(row.type).label, CallStatus(row.status).label, row.src,
                        row.dst, row.external_number or "", row.duration, row.conversation,
                        row.disposition, "yes" if row.recording else "no",
                    )
                    for row in batch
                ]  # fmt: skip

    return batches(), f"calls-{datetime.now(tz):%Y%m%d-%H%M}"


def _download(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


@router.get("/export.csv")
def export_csv(request: Request, conn: ConnDep) -> Response:
    """The list's calls, every page, as CSV (see `_export`)."""
    if (exported := _export(request, conn)) is None:
        return _to_login(request)
    batches, name = exported

    def lines() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        for batch in batches:
            writer.writerows(batch)
            yield out.getvalue()
            out.seek(0)
            out.truncate()
        yield out.getvalue()

    return StreamingResponse(
        lines(), media_type="text/csv; charset=utf-8", headers=_download(f"{name}.csv")
    )


@router.get("/export.xlsx")
def export_xlsx(request: Request, conn: ConnDep) -> Response:
    """The list's calls, every page, as an Excel workbook written as it goes (see `_export`);
    at most Excel's 1,048,575 rows (CSV has no limit)."""
    if (exported := _export(request, conn)) is None:
        return _to_login(request)
    batches, name = exported
    return StreamingResponse(
        xlsx.workbook("Calls", EXPORT_COLUMNS, batches),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers=_download(f"{name}.xlsx"),
    )
