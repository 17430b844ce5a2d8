"""The Call History API routes: list, show, ingest."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection
from starlette.responses import Response

from callhistory import (
    accounts,
    cdrstore,
    crmstore,
    pagination,
    phpquery,
    query,
    recordings,
    resources,
    store,
)
from callhistory.accounts import Principal
from callhistory.api import docs
from callhistory.api.deps import (
    ConnDep,
    JsonBodyDep,
    ReaderDep,
    RecordingUrlDep,
    SettingsDep,
    WriterDep,
    base_url,
    in_one_trip,
    recording_signer,
    require,
)
from callhistory.api.responses import JSONResponse
from callhistory.api.storage import NOT_FOUND as RECORDING_NOT_FOUND
from callhistory.api.storage import RootsDep
from callhistory.errors import CALL_NOT_FOUND, ApiError
from callhistory.ingest import http as http_ingest
from callhistory.models import ABILITY_CALLS_READ, ABILITY_RECORDINGS_DELETE
from callhistory.store import AnyRow

_ID = re.compile(r"[1-9][0-9]{0,17}")  # a positive id that fits in BIGINT


def path_id(value: str) -> int | None:
    """An id from the URL, or None for anything that cannot be one (then: 404)."""
    return int(value) if _ID.fullmatch(value) else None


def account_call(conn: Connection, scope: store.Scope, call: str) -> AnyRow:
    """The call with this id if the scope sees it, or 404 `Call not found.`"""
    call_pk = path_id(call)
    row = store.get(conn, scope, call_pk) if call_pk is not None else None
    if row is None:
        raise ApiError(404, CALL_NOT_FOUND)
    return row


router = APIRouter(prefix="/api/v1/call-history", tags=["Call history"])
RecordingsDeleterDep = Annotated[Principal, Depends(require(ABILITY_RECORDINGS_DELETE))]


@router.get(
    "",
    summary="List calls (filter, sort, pagination)",
    response_model=docs.CallPage,
    responses=docs.errors(400, 401, 403, 422),
    openapi_extra={"parameters": docs.LIST_PARAMETERS},
)
async def list_calls(request: Request, settings: SettingsDep) -> JSONResponse:
    def page(conn: Connection, principal: Principal) -> JSONResponse:
        params = phpquery.parse(request.scope.get("query_string", b""))
        call_query = query.parse(params, principal.timezone)
        total, rows, integrations = store.list_page(conn, principal.scope, call_query)
        recording_url = recording_signer(request, settings, principal.account_id)
        data = [
            resources.call_index(row, integrations[row.id], principal.timezone, recording_url)
            for row in rows
        ]
        body = pagination.envelope(
            data,
            total=total,
            page=call_query.page,
            per_page=call_query.per_page,
            path=f"{base_url(request, settings)}{router.prefix}",
            params=params,
        )
        return JSONResponse(body)

    return await in_one_trip(request, ABILITY_CALLS_READ, page)


@router.get(
    "/{call}",
    summary="One call, with its raw PBX fields",
    response_model=docs.CallShowEnvelope,
    responses=docs.errors(401, 403, 404),
)
def show_call(
    call: str, principal: ReaderDep, conn: ConnDep, recording_url: RecordingUrlDep
) -> JSONResponse:
    row = account_call(conn, principal.scope, call)
    integrations = store.integrations_for(conn, principal.account_id, [row.id])[row.id]
    legs = cdrstore.legs_of_call(conn, principal.account_id, row.id)
    shown = resources.call_show(row, integrations, principal.timezone, recording_url, legs)
    return JSONResponse({"data": shown})


@router.post(
    "",
    summary="Ingest calls from any PBX (idempotent on call_id)",
    status_code=201,
    response_model=docs.IngestResult,
    responses=docs.errors(401, 403, 422),
    openapi_extra={"requestBody": docs.INGEST_BODY},
)
def ingest_calls(
    body: JsonBodyDep, principal: WriterDep, conn: ConnDep, recording_url: RecordingUrlDep
) -> JSONResponse:
    pbx = accounts.pbx_settings(conn, principal.account_id)
    new_calls = http_ingest.parse_body(body, principal.account_id, pbx)
    created = store.insert_calls(conn, principal.account_id, new_calls)
    rows = store.get_many_by_call_id(conn, principal.account_id, (c.call_id for c in new_calls))
    integrations = store.integrations_for(
        conn, principal.account_id, (row.id for row in rows.values())
    )
    data = [
        resources.call_index(
            rows[c.call_id], integrations[rows[c.call_id].id], principal.timezone, recording_url
        )
        for c in new_calls
    ]
    # Counted per item: an item whose call_id was already stored (or came earlier in this
    # same body) is "existing".
    meta = {"created": len(created), "existing": len(new_calls) - len(created)}
    return JSONResponse({"data": data, "meta": meta}, status_code=201)


@router.delete(
    "/{call}/recording",
    summary="Delete a call's recording (the file, and the link)",
    status_code=204,
    responses=docs.errors(401, 403, 404),
)
def delete_recording(
    call: str, principal: RecordingsDeleterDep, conn: ConnDep, roots: RootsDep
) -> Response:
    row = account_call(conn, principal.scope, call)
    if row.recording is None:
        raise ApiError(404, RECORDING_NOT_FOUND)
    # The file first (only the account's own, and only if no other account's call links it):
    # if that fails the link stays and the call can be retried.
    sharing = accounts.accounts_sharing_root(conn, roots.base, principal.account_id)
    recordings.delete_unshared(conn, roots.storage(principal.account_id), sharing, row.recording)
    store.clear_recordings(conn, principal.account_id, [row.id])
    return Response(status_code=204)


@router.post(
    "/{call}/integrations/{integration}/retry",
    summary="Queue a failed CRM sync of the call again",
    response_model=docs.IntegrationEnvelope,
    responses=docs.errors(401, 403, 404, 422),
)
def retry_integration(
    call: str, integration: str, principal: WriterDep, conn: ConnDep
) -> JSONResponse:
    call_pk = account_call(conn, principal.scope, call).id
    row_id = path_id(integration)
    before = crmstore.find_row(conn, principal.account_id, call_pk, row_id) if row_id else None
    if before is None or row_id is None:
        raise ApiError(404, "Integration not found.")
    if before.status != "failed":
        message = f"Only a failed sync can be retried; this one is {before.status}."
        raise ApiError(422, message, {"integration": [message]})
    crmstore.requeue(conn, principal.account_id, row_id)
    after = crmstore.find_row(conn, principal.account_id, call_pk, row_id)
    assert after is not None
    return JSONResponse({"data": resources.integration(after)})
