"""Roles: an ADMIN sees the whole account; a USER (an operator) only the calls where one of its
extensions is the caller or the answering party, by every route: the list and its totals, a
call, recordings, the statistics, the web pages and the export. The proof: everything an
operator reads equals what the admin of an account holding only those calls reads. Users and
tokens over the API, their 403s, 404s and 422s."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from callhistory import accounts, crmstore, migrate, store
from callhistory.cli import app
from callhistory.models import CallType, NewCall
from callhistory.schema import make_engine
from tests.conftest import PASSWORD, Tenant, new_call
from tests.test_recordings import write_wav

URL = "/api/v1/call-history"
STATS = "/api/v1/statistic"
IN, OUT, INT = CallType.INCOMING, CallType.OUTGOING, CallType.INTERNAL
FORBIDDEN = {"message": "This action is unauthorized."}
T0 = datetime(2026, 1, 12, 4, 0, 0)  # 09:00 in Tashkent


def visible_calls(account_id: int) -> list[NewCall]:
    """Calls where extension 101 is the caller or the answering (or rung) party."""
    a = account_id
    return [
        new_call(a, 1, type=OUT, src="101", dst="998901111111", started_at=T0),
        new_call(a, 2, type=IN, src="998902222222", dst="101", started_at=T0 + timedelta(hours=3),
                 recording="2026/01/12/v2.wav"),
        new_call(a, 3, type=IN, src="998903333333", dst="101", conversation=0,
                 started_at=T0 + timedelta(days=1, minutes=7)),
        new_call(a, 4, type=INT, src="101", dst="102", external_number=None,
                 started_at=T0 + timedelta(days=1, hours=5), duration=95, conversation=80),
        new_call(a, 5, type=INT, src="103", dst="101", external_number=None, conversation=0,
                 started_at=T0 + timedelta(days=2, hours=1, minutes=31)),
        new_call(a, 6, type=OUT, src="101", dst="712005060", external_number="712009999",
                 started_at=T0 + timedelta(days=33), duration=300, conversation=290),
    ]  # fmt: skip


def hidden_calls(account_id: int) -> list[NewCall]:
    """The same account's calls of other extensions; `998101000101` contains 101, is not it."""
    a = account_id
    return [
        new_call(a, 11, type=OUT, src="102", dst="998904444444", started_at=T0,
                 recording="2026/01/12/h1.wav"),
        new_call(a, 12, type=IN, src="998905555555", dst="102", started_at=T0 + timedelta(hours=2)),
        new_call(a, 13, type=IN, src="998906666666", dst="103", conversation=0,
                 started_at=T0 + timedelta(days=1)),
        new_call(a, 14, type=INT, src="102", dst="103", external_number=None,
                 started_at=T0 + timedelta(days=1, hours=1)),
        new_call(a, 15, type=IN, src="998101000101", dst="104", conversation=0,
                 started_at=T0 + timedelta(days=2)),
    ]  # fmt: skip


def create_user(
    client: TestClient, admin: Tenant, email: str, extensions: list[str], type_: int = 2
) -> dict[str, Any]:
    body = {"name": email.split("@")[0], "email": email, "password": PASSWORD, "type": type_,
            "extensions": extensions}  # fmt: skip
    response = client.post("/api/v1/users", json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def login(client: TestClient, email: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['result']['access_token']}"}


@pytest.fixture
def world(
    client: TestClient,
    make_tenant: Callable[..., Tenant],
    add_calls: Callable[..., list[int]],
) -> dict[str, Any]:
    """Account A (an admin, operator 101, operator 102) with visible and hidden calls; account
    B with a call of its own extension 101; account M, whose admin holds only A's visible calls."""
    a, b, m = make_tenant(), make_tenant(), make_tenant()
    visible = add_calls(a.account_id, visible_calls(a.account_id))
    hidden = add_calls(a.account_id, hidden_calls(a.account_id))
    foreign = add_calls(b.account_id, [new_call(b.account_id, 1, src="101")])
    add_calls(m.account_id, visible_calls(m.account_id))
    create_user(client, a, "op101@example.com", ["101"])
    create_user(client, a, "op102@example.com", ["102"])
    return {
        "a": a, "b": b, "m": m, "visible": visible, "hidden": hidden, "foreign": foreign,
        "op": login(client, "op101@example.com"),
    }  # fmt: skip


def _without_ids(value: Any) -> Any:
    """A body with what must differ between two accounts blanked: ids and signed links."""
    if isinstance(value, dict):
        return {
            k: None
            if k in ("id", "call_id", "recorded_file_url", "last_call_id")
            else _without_ids(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


LIST_QUERIES = [
    {},
    {"filter[type]": "1"},
    {"filter[status]": "2"},
    {"filter[type]": "3", "filter[status]": "1"},
    {"filter[from]": "2026-01-13 00:00:00", "filter[to]": "2026-01-14 23:59:59"},
    {
        "filter[from]": "2026-01-01 00:00:00",
        "filter[to]": "2026-03-31 23:59:59",
        "filter[type]": "2",
    },
    {"filter[src]": "10"},
    {"filter[dst]": "101"},
    {"filter[duration]": ">60"},
    {"sort": "-duration"},
    {"sort": "datetime", "per_page": "2", "page": "2"},
    {"per_page": "2", "page": "3"},
    {"per_page": "5", "page": "9"},
]


@pytest.mark.parametrize("params", LIST_QUERIES)
def test_an_operator_lists_what_an_account_of_only_its_calls_lists(
    client: TestClient, world: dict[str, Any], params: dict[str, str]
) -> None:
    mine = client.get(URL, params=params, headers=world["op"])
    alone = client.get(URL, params=params, headers=world["m"].headers)
    assert mine.status_code == alone.status_code == 200
    assert _without_ids(mine.json()) == _without_ids(alone.json())
    shown = {row["id"] for row in mine.json()["data"]}
    assert shown <= set(world["visible"])


def test_the_list_of_an_operator_holds_exactly_its_calls(
    client: TestClient, world: dict[str, Any]
) -> None:
    body = client.get(URL, params={"per_page": "100"}, headers=world["op"]).json()
    assert sorted(row["id"] for row in body["data"]) == sorted(world["visible"])
    assert body["meta"]["total"] == len(world["visible"])
    admin = client.get(URL, params={"per_page": "100"}, headers=world["a"].headers).json()
    assert admin["meta"]["total"] == len(world["visible"]) + len(world["hidden"])


def test_an_operator_reaches_no_other_call_by_id(client: TestClient, world: dict[str, Any]) -> None:
    for pk in world["visible"]:
        assert client.get(f"{URL}/{pk}", headers=world["op"]).status_code == 200
    for pk in world["hidden"] + world["foreign"]:
        response = client.get(f"{URL}/{pk}", headers=world["op"])
        assert (response.status_code, response.json()) == (404, {"message": "Call not found."})


def test_an_operator_hears_only_its_recordings(
    make_client: Callable[..., TestClient], world: dict[str, Any], tmp_path: Path
) -> None:
    base = tmp_path / "recordings"
    rclient = make_client(recordings_dir=base)
    root = base / str(world["a"].account_id)
    mine, theirs = write_wav(root / "2026/01/12/v2.wav"), write_wav(root / "2026/01/12/h1.wav")
    shown = rclient.get(f"{URL}/{world['visible'][1]}", headers=world["op"]).json()["data"]
    assert rclient.get(shown["recorded_file_url"]).content == mine
    assert rclient.get("/storage/monitor/2026/01/12/v2.wav", headers=world["op"]).content == mine
    response = rclient.get("/storage/monitor/2026/01/12/h1.wav", headers=world["op"])
    assert (response.status_code, response.json()) == (403, FORBIDDEN)  # as another account's
    admin = rclient.get("/storage/monitor/2026/01/12/h1.wav", headers=world["a"].headers)
    assert admin.content == theirs


PERIOD = {"from": "2026-01-01", "to": "2026-01-31"}
STATS_QUERIES = [
    ("calls-count", PERIOD),
    ("calls-count", {"from": "2026-01-13", "to": "2026-01-13"}),
    ("calls-count", {**PERIOD, "external_number": "781130590"}),
    ("calls-by-hour", PERIOD),
    ("calls-by-day", {"from": "2026-01-01", "to": "2026-12-31"}),
    ("calls-by-month", {"from": "2026-01-01", "to": "2026-12-31"}),
    ("calls-by-external-number", PERIOD),
    ("calls-by-users", PERIOD),
    ("calls-by-users", {**PERIOD, "status": "2"}),
    ("heatmap", PERIOD),
    ("summary", PERIOD),
    ("summary", {**PERIOD, "sla": "5", "external_number": "781130590"}),
    ("missed-unreturned", PERIOD),
    ("calls-count-by-history", {}),
    ("calls-count-by-history", {"filter[src]": "10", "filter[status]": "2"}),
]


@pytest.mark.parametrize(("path", "params"), STATS_QUERIES)
def test_an_operators_statistics_are_those_of_its_calls_alone(
    client: TestClient, world: dict[str, Any], path: str, params: dict[str, str]
) -> None:
    mine = client.get(f"{STATS}/{path}", params=params, headers=world["op"])
    alone = client.get(f"{STATS}/{path}", params=params, headers=world["m"].headers)
    assert mine.status_code == alone.status_code == 200, mine.text
    assert _without_ids(mine.json()) == _without_ids(alone.json())
    admin = client.get(f"{STATS}/{path}", params=params, headers=world["a"].headers)
    if path != "missed-unreturned" or params:  # the admin sees more
        assert admin.json() != mine.json()


def test_an_operator_only_reads(client: TestClient, world: dict[str, Any]) -> None:
    op = world["op"]
    pk = world["visible"][1]
    attempts = [
        client.post(URL, json=[{"pbx_call_id": "x"}], headers=op),
        client.delete(f"{URL}/{pk}/recording", headers=op),
        client.post(f"{URL}/{pk}/integrations/1/retry", headers=op),
        client.get("/api/v1/users", headers=op),
        client.post("/api/v1/users", json={}, headers=op),
        client.patch("/api/v1/users/1", json={}, headers=op),
    ]
    for response in attempts:
        assert (response.status_code, response.json()) == (403, FORBIDDEN), response.request.url
    me = client.get("/api/v1/auth/me", headers=op).json()["result"]
    assert me["type"] == {"number": 2, "name": "USER"}


def web_session(client: TestClient, email: str) -> None:
    page = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    form = {"csrf": csrf.group(1), "email": email, "password": PASSWORD, "next": "/"}
    assert client.post("/login", data=form, follow_redirects=False).status_code == 303


def test_the_web_pages_and_export_show_an_operator_only_its_calls(
    make_client: Callable[..., TestClient], world: dict[str, Any]
) -> None:
    web = make_client()
    web_session(web, "op101@example.com")
    export = web.get("/export.csv", params={"per_page": "100"})
    assert export.status_code == 200
    lines = export.text.strip().splitlines()
    assert len(lines) == 1 + len(world["visible"])
    for pk in world["hidden"]:
        assert web.get(f"/calls/{pk}").status_code == 404
    assert web.get(f"/calls/{world['visible'][0]}").status_code == 200
    listing = web.get("/").text
    assert "998902222222" in listing and "998905555555" not in listing
    dashboard = web.get("/dashboard", params={"from": "2026-01-01", "to": "2026-01-31"}).text
    assert "998903333333" in dashboard and "998906666666" not in dashboard


def test_a_new_scope_applies_to_the_next_request(client: TestClient, world: dict[str, Any]) -> None:
    users = client.get("/api/v1/users", headers=world["a"].headers).json()["data"]
    op = next(u for u in users if u["email"] == "op101@example.com")
    assert op["type"] == {"number": 2, "name": "USER"} and op["extensions"] == ["101"]
    response = client.patch(
        f"/api/v1/users/{op['id']}", json={"extensions": ["102", "103"]}, headers=world["a"].headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["extensions"] == ["102", "103"]
    seen = client.get(URL, params={"per_page": "100"}, headers=world["op"]).json()
    assert sorted(row["src"] + ">" + row["dst"] for row in seen["data"]) == sorted(
        ["102>998904444444", "998905555555>102", "998906666666>103", "102>103", "101>102",
         "103>101"]
    )  # fmt: skip
    # Promoted to admin: the whole account; disabled: nothing at all.
    client.patch(f"/api/v1/users/{op['id']}", json={"type": 1}, headers=world["a"].headers)
    assert client.get(URL, headers=world["op"]).json()["meta"]["total"] == 11
    client.patch(f"/api/v1/users/{op['id']}", json={"disabled": True}, headers=world["a"].headers)
    assert client.get(URL, headers=world["op"]).status_code == 401


def test_users_api_validation(client: TestClient, world: dict[str, Any]) -> None:
    admin = world["a"].headers

    def post(body: Any) -> tuple[int, Any]:
        response = client.post("/api/v1/users", json=body, headers=admin)
        return response.status_code, response.json()

    assert post({"name": "X", "email": "x@example.com", "password": "secret1", "type": 2}) == (
        422,
        {
            "message": "A user with role user needs at least one extension.",
            "errors": {"extensions": ["A user with role user needs at least one extension."]},
        },
    )
    status, body = post({"email": "op101@example.com", "password": "12", "type": 3,
                         "extensions": [" "]})  # fmt: skip
    assert status == 422
    assert body["errors"] == {
        "name": ["The name field is required."],
        "email": ["The email has already been taken."],
        "password": ["The password field must be at least 6 characters."],
        "type": ["The selected type is invalid."],
        "extensions": ["'' is not an extension (1-64 of 0-9 A-Z a-z * # + _ . -)."],
    }
    assert post([1, 2])[0] == 422
    for garbage in (b"\x00", b"[]", b"null"):
        response = client.patch(
            "/api/v1/users/1",
            content=garbage,
            headers={**admin, "Content-Type": "application/json"},
        )
        assert (response.status_code, response.json()) == (
            422,
            {"message": "The body must be a JSON object.",
             "errors": {"body": ["The body must be a JSON object."]}},
        )  # fmt: skip
    me = client.get("/api/v1/auth/me", headers=admin).json()["result"]["id"]
    response = client.patch(f"/api/v1/users/{me}", json={"disabled": True}, headers=admin)
    assert response.status_code == 422
    assert response.json()["errors"] == {
        "type": ["You cannot demote or disable yourself; ask another admin."]
    }
    other_account_user = client.get("/api/v1/users", headers=world["b"].headers).json()["data"]
    response = client.patch(
        f"/api/v1/users/{other_account_user[0]['id']}", json={"disabled": True}, headers=admin
    )
    assert (response.status_code, response.json()) == (404, {"message": "User not found."})


def test_tokens_api(client: TestClient, world: dict[str, Any]) -> None:
    op, admin = world["op"], world["a"].headers
    made = client.post("/api/v1/tokens", json={"name": "crm", "abilities": ["calls:read"]},
                       headers=op)  # fmt: skip
    assert made.status_code == 201, made.text
    data = made.json()["data"]
    assert list(data) == ["id", "user_id", "name", "abilities", "last_used_at", "created_at",
                          "plain_text_token"]  # fmt: skip
    assert (data["name"], data["abilities"], data["last_used_at"]) == ("crm", ["calls:read"], None)
    narrow = {"Authorization": f"Bearer {data['plain_text_token']}"}
    assert client.get(URL, headers=narrow).json()["meta"]["total"] == len(world["visible"])

    # No escalation: a read-only token cannot mint a wider one; an operator never writes.
    for headers, abilities in (
        (narrow, ["*"]),
        (narrow, ["recordings:read"]),
        (op, ["calls:write"]),
    ):
        response = client.post("/api/v1/tokens", json={"name": "x", "abilities": abilities},
                               headers=headers)  # fmt: skip
        assert (response.status_code, response.json()["errors"]) == (
            422, {"abilities": ["A token cannot grant more than the token that creates it."]}
        ), abilities  # fmt: skip

    listed = client.get("/api/v1/tokens", headers=op).json()["data"]
    assert {t["user_id"] for t in listed} == {data["user_id"]}
    assert all("token" not in t and "plain_text_token" not in t for t in listed)
    everyone = client.get("/api/v1/tokens", headers=admin).json()["data"]
    assert {t["user_id"] for t in everyone} == {world["a"].user_id, data["user_id"]}

    # An operator cannot revoke another's token; the admin can revoke the operator's.
    admin_token = world["a"].token.split("|")[0]
    response = client.delete(f"/api/v1/tokens/{admin_token}", headers=op)
    assert (response.status_code, response.json()) == (404, {"message": "Token not found."})
    b_token = world["b"].token.split("|")[0]
    assert client.delete(f"/api/v1/tokens/{b_token}", headers=admin).status_code == 404
    assert client.delete(f"/api/v1/tokens/{data['id']}", headers=admin).status_code == 204
    assert client.get(URL, headers=narrow).status_code == 401
    assert client.get(URL, headers=world["b"].headers).status_code == 200


def test_upgrading_keeps_every_existing_user_seeing_the_whole_account(tmp_path: Path) -> None:
    """Before roles, every user saw its whole account: the migration makes each an ADMIN (the
    original's `USER` type included), so nobody loses or gains access by upgrading."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    migrate.upgrade(engine, revision="0010")
    now = store.utcnow()
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO accounts (id, name, timezone, created_at, updated_at)"
                 " VALUES (1, 'Old', 'Asia/Tashkent', :now, :now)"),
            {"now": now},
        )  # fmt: skip
        for n, type_ in ((1, 2), (2, 1)):
            conn.execute(
                text("INSERT INTO users (id, account_id, name, email, password, type, created_at,"
                     " updated_at) VALUES (:n, 1, 'U', :email, 'x', :type, :now, :now)"),
                {"n": n, "email": f"u{n}@example.com", "type": type_, "now": now},
            )  # fmt: skip
        token = accounts.create_token(conn, 1)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert [r.type for r in accounts.list_users(conn, 1)] == [1, 1]
        principal = accounts.find_principal(conn, token)
        assert principal is not None and principal.scope == store.Scope(1, None)
    engine.dispose()


def test_cli_roles(cli_env: dict[str, str], client: TestClient, tenant: Tenant) -> None:
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=cli_env)
        return result.exit_code, result.output

    account = str(tenant.account_id)
    create = ["users", "create", "--account", account, "--name", "Op", "--password", "secret1"]
    assert run(*create, "--email", "op@example.com", "--role", "user") == (
        1, "error: A user with role user needs at least one extension.\n"
    )  # fmt: skip
    assert run(*create, "--email", "op@example.com", "--role", "boss")[1] == (
        "error: Unknown role 'boss'; use admin or user.\n"
    )
    code, _ = run(*create, "--email", "op@example.com", "--role", "user",
                  "--extension", "101", "--extension", "102")  # fmt: skip
    assert code == 0
    listed = run("users", "list", "--account", account)[1].splitlines()
    assert listed[2].split()[1:5] == ["op@example.com", "Op", "USER", "101,102"]
    assert run("users", "set-role", "--email", "op@example.com", "--role", "user",
               "--extension", "103") == (0, "op@example.com is now user (103)\n")  # fmt: skip
    assert run("users", "set-role", "--email", "op@example.com", "--role", "admin") == (
        0, "op@example.com is now admin\n"
    )  # fmt: skip
    assert run("users", "list", "--account", account)[1].splitlines()[2].split()[3:5] == [
        "ADMIN", "-"
    ]  # fmt: skip


def test_the_call_page_retries_a_failed_sync_for_an_admin_only(
    make_client: Callable[..., TestClient], world: dict[str, Any], db: Engine
) -> None:
    pk = world["visible"][0]
    with db.begin() as conn:
        row_id = store.add_integration(
            conn, world["a"].account_id, pk, "amocrm", "failed", "Contact not found"
        )
    admin, operator = make_client(), make_client()
    web_session(admin, world["a"].email)
    web_session(operator, "op101@example.com")
    form = f"/calls/{pk}/integrations/{row_id}/retry"
    page = operator.get(f"/calls/{pk}").text
    assert "Contact not found" in page and "Retry sync" not in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    response = operator.post(form, data={"csrf": csrf.group(1)}, follow_redirects=False)
    assert (response.status_code, response.json()) == (403, FORBIDDEN)

    page = admin.get(f"/calls/{pk}").text
    assert f'action="{form}"' in page and "Retry sync" in page
    assert admin.post(form, data={"csrf": "forged"}).status_code == 403  # CSRF
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    response = admin.post(form, data={"csrf": csrf.group(1)}, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, f"/calls/{pk}")
    with db.connect() as conn:
        assert crmstore.find_row(conn, world["a"].account_id, pk, row_id).status == "pending"  # type: ignore[union-attr]
    assert "Retry sync" not in admin.get(f"/calls/{pk}").text
    hidden = f"/calls/{world['hidden'][0]}/integrations/{row_id}/retry"
    assert admin.post(hidden, data={"csrf": csrf.group(1)}).status_code == 404
