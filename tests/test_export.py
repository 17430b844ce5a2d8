"""The web app's exports over HTTP: CSV and Excel carry the same rows (every page of the list's
filter and sort, times in the account's zone), the workbook opens in openpyxl (Python's zipfile
underneath, as strict as Excel about the zip), text with XML's special characters survives, and
both need a session."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from openpyxl import load_workbook

from callhistory.models import CallType
from tests.conftest import Tenant, new_call
from tests.test_roles import web_session


def test_csv_and_xlsx_exports_agree(
    make_client: Callable[..., TestClient], tenant: Tenant, add_calls: Callable[..., list[int]]
) -> None:
    a = tenant.account_id
    start = datetime(2026, 1, 13, 5, 0, 0)
    calls = [
        new_call(a, n, type=CallType.INCOMING if n % 3 else CallType.OUTGOING,
                 started_at=start + timedelta(minutes=n), conversation=n % 7 * 10,
                 recording=f"2026/01/13/{n}.wav" if n % 2 else None)
        for n in range(2500)
    ]  # fmt: skip
    calls.append(new_call(a, 9999, src='<Ali & "Vali">\x01', started_at=start))
    add_calls(a, calls)
    client = make_client()
    web_session(client, tenant.email)
    params = {"sort": "-duration", "filter[type]": "1,2"}

    exported_csv = client.get("/export.csv", params=params)
    assert exported_csv.status_code == 200
    rows = list(csv.reader(io.StringIO(exported_csv.text)))

    exported = client.get("/export.xlsx", params=params)
    assert exported.status_code == 200
    assert exported.headers["content-type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert exported.headers["content-disposition"].endswith('.xlsx"')
    book = load_workbook(io.BytesIO(exported.content), read_only=True)
    assert book.sheetnames == ["Calls"]
    cells = [
        ["" if v is None else str(v) for v in row]
        for row in book["Calls"].iter_rows(values_only=True)
    ]
    assert len(cells) == len(rows) == 1 + 2501
    # The same rows, the same order; XLSX cannot carry control characters (XML 1.0), CSV can.
    assert cells == [[v.replace("\x01", "") for v in row] for row in rows]
    odd = next(r for r in cells if r[4].startswith("<Ali"))
    assert odd[4] == '<Ali & "Vali">'  # XML's special characters kept; a control character dropped
    assert rows[0] == ["id", "date_time", "direction", "status", "src", "dst", "external_number",
                       "duration", "conversation", "disposition", "recorded"]  # fmt: skip


def test_exports_need_a_session(client: TestClient) -> None:
    for path in ("/export.csv", "/export.xlsx"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next=%2F{path[1:]}"
