"""GET/HEAD /storage/monitor/{path}: a call's audio, streamed, for whoever may hear it.

Allowed with a valid signature of the account and the path (the signed `recorded_file_url`), or
with a bearer token that has `recordings:read` of an account whose call links the path. Either way
the path is resolved only inside that account's own recordings root. The file is streamed in
chunks (never read whole), with ranges, ETag/Last-Modified and conditional requests.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine
from starlette.responses import FileResponse, Response

from callhistory import accounts, signing, store
from callhistory.api.deps import SettingsDep, bearer_token
from callhistory.errors import UNAUTHORIZED, ApiError
from callhistory.models import ABILITY_RECORDINGS_READ
from callhistory.query import php_int
from callhistory.recordings import AccountRoots, StoredFile, content_type, safe_path

router = APIRouter(tags=["Recordings"])
NOT_FOUND = "Recording not found."


def get_roots(request: Request) -> AccountRoots:
    roots: AccountRoots = request.app.state.recordings
    return roots


RootsDep = Annotated[AccountRoots, Depends(get_roots)]


def _signed_account(request: Request, path: str, key: bytes) -> int | None:
    """The account whose signature the URL carries for this path, if it is valid."""
    given = request.query_params.get("signature")
    account_id = php_int(request.query_params.get("account") or "")
    if not given or account_id is None or account_id < 1:
        return None
    raw_expires = request.query_params.get("expires")
    expires = php_int(raw_expires) if raw_expires is not None else None
    if raw_expires is not None and expires is None:
        return None
    return account_id if signing.verify(key, account_id, path, given, expires) else None


def _token_account(request: Request, path: str) -> int | None:
    """The token's account, when it may hear a call of its own that links the path. Only asked
    when there is no valid signature: a signed link (a browser playing, amoCRM fetching) needs no
    token lookup."""
    token = bearer_token(request)
    if not token:
        return None
    engine: Engine = request.app.state.engine
    with engine.connect() as conn:
        principal = accounts.find_principal(conn, token)
        if (
            principal is not None
            and principal.can(ABILITY_RECORDINGS_READ)
            and store.has_recording(conn, principal.scope, path)
        ):
            return principal.account_id
    return None


def _not_modified(request: Request, found: StoredFile) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or found.etag in tags
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return int(found.mtime) <= since
    return False


def _check_range(request: Request, found: StoredFile) -> None:
    """A Range that cannot be served is a 416 with the contract's JSON (Starlette would answer
    in plain text); a good one is left to FileResponse, which streams it."""
    header = request.headers.get("range")
    if header is None:
        return
    try:
        FileResponse._parse_range_header(header, found.size)
    except Exception:  # Starlette's MalformedRangeHeader / RangeNotSatisfiable
        raise ApiError(
            416,
            "The requested range is not satisfiable.",
            headers={"Content-Range": f"bytes */{found.size}"},
        ) from None


_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"audio/wav": {}}, "description": "the audio"},
    206: {"description": "the requested range(s)"},
    304: {"description": "not modified"},
    403: {"description": "no valid signature and no token of the call's account"},
    404: {"description": "no such recording, or a path outside the recordings"},
    416: {"description": "a range that cannot be served"},
}
_SUMMARY = "A call's recording (signed URL, or a token with recordings:read)"
_PATH = "/storage/monitor/{path:path}"


#: A signed link needs no token: either the signature (and its account) or a bearer token.
_OPENAPI: dict[str, Any] = {
    "security": [{}, {"bearer": []}],
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
        for name, schema, text in [
            ("account", {"type": "integer"}, "the account the link was signed for"),
            ("expires", {"type": "integer"}, "unix time the link expires (when it does)"),
            ("signature", {"type": "string"}, "HMAC-SHA256 of account, path (and expires)"),
        ]
    ],
}


@router.head(
    _PATH,
    summary=_SUMMARY,
    responses=_RESPONSES,
    operation_id="head_recording",
    openapi_extra=_OPENAPI,
)
@router.get(
    _PATH,
    summary=_SUMMARY,
    responses=_RESPONSES,
    operation_id="get_recording",
    openapi_extra=_OPENAPI,
)
def recording(path: str, request: Request, settings: SettingsDep, roots: RootsDep) -> Response:
    if not safe_path(path):
        raise ApiError(404, NOT_FOUND)
    account_id = _signed_account(request, path, settings.signing_key) or _token_account(
        request, path
    )
    if account_id is None:
        raise ApiError(403, UNAUTHORIZED)
    found = roots.storage(account_id).locate(path)
    if found is None:
        raise ApiError(404, NOT_FOUND)
    validators = {
        "etag": found.etag,
        "last-modified": found.last_modified,
        "cache-control": "private, max-age=3600",
    }
    if _not_modified(request, found):
        return Response(status_code=304, headers=validators)
    _check_range(request, found)
    return FileResponse(
        found.path, media_type=content_type(path), stat_result=found.stat, headers=validators
    )
