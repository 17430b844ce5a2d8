"""GET /api/v1/call-history and /{id} through the real app and database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, update

from callhistory import signing, store
from callhistory.models import CallType
from callhistory.schema import call_integrations
from tests.conftest import TEST_APP_KEY, Tenant, new_call

URL = "/api/v1/call-history"
AddCalls = Callable[..., list[int]]


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


@pytest.fixture
def seeded(tenant: Tenant, add_calls: AddCalls) -> list[int]:
    """Five varied calls of the tenant (UTC start times, Tashkent is UTC+5)."""
    a = tenant.account_id
    return add_calls(
        a,
        [
            new_call(a, 1, src="100", dst="998901234567", duration=30, conversation=20),
            new_call(
                a,
                2,
                src="998935550000",
                dst="101",
                external_number="712005060",
                type=CallType.INCOMING,
                duration=61,
                conversation=0,
                disposition="BUSY",
            ),
            new_call(
                a,
                3,
                src="101",
                dst="102",
                external_number=None,
                type=CallType.INTERNAL,
                duration=5,
                conversation=3,
            ),
            new_call(a, 4, src="1%_\\x", dst="ABC", duration=61, conversation=60),
            new_call(a, 5, src="100", dst="998901111111", duration=0, conversation=0),
        ],
    )


def test_unauthenticated(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
        response = client.get(URL, headers=headers)
        assert (response.status_code, response.json()) == (401, {"message": "Unauthenticated."})


@pytest.mark.parametrize(
    "token",
    [
        "1|wrong",
        "1|",
        "|x",
        "abc|x",
        "99999999999999999999999|x",
        "-1|x",
        "x" * 10_000,
        "1|" + "ä" * 50,
    ],
)
def test_malformed_tokens(client: TestClient, tenant: Tenant, token: str) -> None:
    response = client.get(URL, headers={"Authorization": f"Bearer {token}".encode()})
    assert (response.status_code, response.json()) == (401, {"message": "Unauthenticated."})


def test_missing_ability_is_403(client: TestClient, make_tenant: Callable[..., Tenant]) -> None:
    writer = make_tenant(abilities=("calls:write",))
    response = client.get(URL, headers=writer.headers)
    assert (response.status_code, response.json()) == (
        403,
        {"message": "This action is unauthorized."},
    )
    reader = make_tenant(abilities=("calls:read",))
    assert client.get(URL, headers=reader.headers).status_code == 200


def test_spec_example_page(
    make_client: Callable[..., TestClient], tenant: Tenant, add_calls: AddCalls, db: Engine
) -> None:
    """The original page's example: 747 calls, per_page=15, page 1, newest first."""
    client = make_client(public_url="https://api.dev.utel.uz")
    a = tenant.account_id
    calls = [
        new_call(a, n, started_at=datetime(2026, 1, 1) + timedelta(minutes=n)) for n in range(745)
    ]
    calls.append(
        new_call(
            a,
            745,
            call_id="5fc4b6a0-7c83-430e-a2a8-304788efd376",
            started_at=datetime(2026, 1, 13, 12, 33, 12),
            src="100",
            dst="101",
            external_number=None,
            duration=2,
            conversation=0,
            type=CallType.INTERNAL,
            recording="2026/01/13/1768307591.0.wav",
        )
    )
    calls.append(
        new_call(
            a,
            746,
            call_id="9b03293e-a0ea-4212-92d1-5848a41d4987",
            started_at=datetime(2026, 1, 13, 12, 54, 36),
            src="100",
            dst="999995998",
            external_number="781130590",
            duration=23,
            conversation=8,
            recording="2026/01/13/1768308876.2.wav",
        )
    )
    assert add_calls(a, calls)[-2:] == [746, 747]
    with db.begin() as conn:
        store.add_integration(conn, a, 747, "amocrm", "synced")
        conn.execute(
            update(call_integrations).values(
                created_at=datetime(2026, 1, 13, 12, 55, 2),
                updated_at=datetime(2026, 1, 13, 12, 55, 2),
            )
        )

    response = client.get(URL, params={"sort": "-id", "per_page": 15}, headers=tenant.headers)
    assert response.status_code == 200
    body = response.json()
    base = "https://api.dev.utel.uz"
    a = tenant.account_id
    signature = signing.signature(TEST_APP_KEY.encode(), a, "2026/01/13/1768308876.2.wav")
    assert body["data"][:2] == [
        {
            "id": 747,
            "call_id": "9b03293e-a0ea-4212-92d1-5848a41d4987",
            "date_time": "2026-01-13 17:54:36",
            "src": "100",
            "dst": "999995998",
            "external_number": "781130590",
            "duration": 23,
            "conversation": 8,
            "type": {"number": 2, "name": "Outgoing"},
            "status": {"number": 1, "name": "Answered"},
            "recorded_file_url": f"{base}/storage/monitor/2026/01/13/1768308876.2.wav"
            f"?account={a}&signature={signature}",
            "integration": [
                {
                    "id": 1,
                    "call_history_id": 747,
                    "integration_type": "amocrm",
                    "status": "synced",
                    "error_message": None,
                    "created_at": "2026-01-13T12:55:02.000000Z",
                    "updated_at": "2026-01-13T12:55:02.000000Z",
                }
            ],
        },
        {
            "id": 746,
            "call_id": "5fc4b6a0-7c83-430e-a2a8-304788efd376",
            "date_time": "2026-01-13 17:33:12",
            "src": "100",
            "dst": "101",
            "external_number": None,
            "duration": 2,
            "conversation": 0,
            "type": {"number": 3, "name": "Internal"},
            "status": {"number": 2, "name": "Not answered"},
            "recorded_file_url": f"{base}/storage/monitor/2026/01/13/1768307591.0.wav"
            f"?account={a}&signature="
            + signing.signature(TEST_APP_KEY.encode(), a, "2026/01/13/1768307591.0.wav"),
            "integration": [],
        },
    ]
    assert len(body["data"]) == 15
    page = f"{base}/api/v1/call-history?sort=-id&per_page=15&page="
    assert body["links"] == {
        "first": page + "1",
        "last": page + "50",
        "prev": None,
        "next": page + "2",
    }
    assert body["meta"] == {
        "current_page": 1,
        "from": 1,
        "last_page": 50,
        "links": [
            {"url": None, "label": "« Previous", "active": False},
            *({"url": page + str(n), "label": str(n), "active": n == 1} for n in range(1, 11)),
            {"url": None, "label": "...", "active": False},
            {"url": page + "49", "label": "49", "active": False},
            {"url": page + "50", "label": "50", "active": False},
            {"url": page + "2", "label": "Next »", "active": False},
        ],
        "path": f"{base}/api/v1/call-history",
        "per_page": 15,
        "to": 15,
        "total": 747,
    }
    assert list(body) == ["data", "links", "meta"]
    assert list(body["meta"]) == [
        "current_page", "from", "last_page", "links", "path", "per_page", "to", "total"
    ]  # fmt: skip


def test_empty_account(client: TestClient, tenant: Tenant) -> None:
    body = client.get(URL, headers=tenant.headers).json()
    page = "http://testserver/api/v1/call-history?page="
    assert body == {
        "data": [],
        "links": {"first": page + "1", "last": page + "1", "prev": None, "next": None},
        "meta": {
            "current_page": 1,
            "from": None,
            "last_page": 1,
            "links": [
                {"url": None, "label": "« Previous", "active": False},
                {"url": page + "1", "label": "1", "active": True},
                {"url": None, "label": "Next »", "active": False},
            ],
            "path": "http://testserver/api/v1/call-history",
            "per_page": 20,
            "to": None,
            "total": 0,
        },
    }


def test_pages_and_links_keep_the_query(
    client: TestClient, seeded: list[int], tenant: Tenant
) -> None:
    query = "filter[src]=10&sort=-duration&per_page=2&page=2&foo=bar"
    body = client.get(f"{URL}?{query}", headers=tenant.headers).json()
    # src contains "10": calls 1, 3 (101), 5 (100); by duration desc then id desc: 1, 3, 5
    assert [c["id"] for c in body["data"]] == [5]
    assert (body["meta"]["from"], body["meta"]["to"], body["meta"]["total"]) == (3, 3, 3)
    link = (
        "http://testserver/api/v1/call-history?filter%5Bsrc%5D=10&sort=-duration&per_page=2"
        "&foo=bar&page="
    )
    assert body["links"] == {
        "first": link + "1",
        "last": link + "2",
        "prev": link + "1",
        "next": None,
    }


def test_page_past_the_end(client: TestClient, seeded: list[int], tenant: Tenant) -> None:
    for page in ("4", "9223372036854775807"):
        body = client.get(URL, params={"per_page": 2, "page": page}, headers=tenant.headers).json()
        assert body["data"] == []
        assert body["meta"]["current_page"] == int(page)
        assert (body["meta"]["from"], body["meta"]["to"], body["meta"]["last_page"]) == (
            None,
            None,
            3,
        )
        assert body["links"]["prev"].endswith(f"page={int(page) - 1}")
        assert body["links"]["next"] is None
        assert not any(link["active"] for link in body["meta"]["links"])


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [1, 2, 3, 4, 5]),
        ({"filter[src]": "100"}, [1, 5]),
        ({"filter[src]": "5550"}, [2]),
        ({"filter[src]": "%"}, [4]),
        ({"filter[src]": "_"}, [4]),
        ({"filter[src]": "\\"}, [4]),
        ({"filter[src]": "1%_"}, [4]),
        ({"filter[dst]": "abc"}, [4]),  # case-insensitive
        ({"filter[dst]": "1111,102"}, [3, 5]),
        ({"filter[external_number]": "712"}, [2]),
        ({"filter[duration]": "61"}, [2, 4]),
        ({"filter[duration]": ">60"}, [2, 4]),
        ({"filter[duration]": ">=30"}, [1, 2, 4]),
        ({"filter[duration]": "<5"}, [5]),
        ({"filter[duration]": "<=5"}, [3, 5]),
        ({"filter[duration]": "0,61"}, [2, 4, 5]),
        ({"filter[conversation]": "0"}, [2, 5]),
        ({"filter[conversation]": ">20"}, [4]),
        ({"filter[type]": "1"}, [2]),
        ({"filter[type]": "2"}, [1, 4, 5]),
        ({"filter[type]": "1,3"}, [2, 3]),
        ({"filter[status]": "1"}, [1, 3, 4]),
        ({"filter[status]": "2"}, [2, 5]),
        ({"filter[status]": "2", "filter[type]": "2"}, [5]),
        ({"filter[src]": "100", "filter[duration]": ">0"}, [1]),
        ({"filter[src]": "", "filter[type]": " "}, [1, 2, 3, 4, 5]),  # empty values are ignored
        ({"filter[src]": "nothing"}, []),
    ],
)
def test_filters(
    client: TestClient,
    seeded: list[int],
    tenant: Tenant,
    params: dict[str, str],
    expected: list[int],
) -> None:
    response = client.get(URL, params=params, headers=tenant.headers)
    assert ids(response) == expected
    assert response.json()["meta"]["total"] == len(expected)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("id", [1, 2, 3, 4, 5]),
        ("-id", [5, 4, 3, 2, 1]),
        ("datetime", [1, 2, 3, 4, 5]),
        ("-datetime", [5, 4, 3, 2, 1]),
        ("-date_time", [5, 4, 3, 2, 1]),
        ("duration", [5, 3, 1, 2, 4]),  # 2 and 4 tie at 61: id breaks the tie ascending
        ("-duration", [4, 2, 1, 3, 5]),  # ... and descending
        ("-duration,id", [2, 4, 1, 3, 5]),
        ("conversation", [2, 5, 3, 1, 4]),
        ("-conversation", [4, 1, 3, 5, 2]),
        ("conversation,-duration", [2, 5, 3, 1, 4]),
    ],
)
def test_sorts(
    client: TestClient, seeded: list[int], tenant: Tenant, sort: str, expected: list[int]
) -> None:
    assert ids(client.get(URL, params={"sort": sort}, headers=tenant.headers)) == expected


def test_ties_never_overlap_or_skip_across_pages(
    client: TestClient, tenant: Tenant, add_calls: AddCalls
) -> None:
    a = tenant.account_id
    same = datetime(2026, 1, 13, 10, 0, 0)
    add_calls(a, [new_call(a, n, started_at=same, duration=n % 3) for n in range(25)])
    for sort in ("datetime", "-datetime", "duration", "-duration"):
        seen: list[int] = []
        for page in range(1, 5):
            params = {"sort": sort, "per_page": 7, "page": page}
            seen += ids(client.get(URL, params=params, headers=tenant.headers))
        assert sorted(seen) == list(range(1, 26)), sort


def test_timezone_edges(
    client: TestClient, make_tenant: Callable[..., Tenant], add_calls: AddCalls
) -> None:
    tenant = make_tenant()  # Asia/Tashkent, UTC+5
    a = tenant.account_id
    add_calls(
        a,
        [
            new_call(a, 1, started_at=datetime(2026, 1, 13, 18, 59, 59)),  # 23:59:59 local
            new_call(a, 2, started_at=datetime(2026, 1, 13, 19, 0, 0)),  # 00:00:00 next day
            new_call(a, 3, started_at=datetime(2026, 1, 12, 19, 0, 0)),  # 00:00:00 local, 13th
        ],
    )

    def query(**params: str) -> list[int]:
        filters = {f"filter[{k}]": v for k, v in params.items()}
        return ids(client.get(URL, params=filters, headers=tenant.headers))

    assert query(**{"from": "2026-01-13", "to": "2026-01-13"}) == [1, 3]
    assert query(to="2026-01-13 23:59:59") == [1, 3]
    assert query(to="2026-01-13 23:59:58") == [3]
    assert query(**{"from": "2026-01-13 23:59:59"}) == [1, 2]
    assert query(**{"from": "2026-01-14"}) == [2]
    assert query(**{"from": "2026-01-13 23:59:59", "to": "2026-01-13 23:59:59"}) == [1]
    body = client.get(f"{URL}/1", headers=tenant.headers).json()["data"]
    assert body["date_time"] == "2026-01-13 23:59:59"

    # The same UTC instants in a UTC-5 account read as the previous evening.
    ny = make_tenant(timezone="America/New_York")
    add_calls(
        ny.account_id, [new_call(ny.account_id, 1, started_at=datetime(2026, 1, 13, 4, 59, 59))]
    )
    response = client.get(URL, params={"filter[from]": "2026-01-12"}, headers=ny.headers)
    assert [c["date_time"] for c in response.json()["data"]] == ["2026-01-12 23:59:59"]
    far = {"filter[from]": "0001-01-01", "filter[to]": "9999-12-31 23:59:59"}
    assert len(ids(client.get(URL, params=far, headers=ny.headers))) == 1


def test_accounts_are_isolated(
    client: TestClient, make_tenant: Callable[..., Tenant], add_calls: AddCalls
) -> None:
    alice, bob = make_tenant(), make_tenant()
    alice_ids = add_calls(alice.account_id, [new_call(alice.account_id, n) for n in range(3)])
    # Bob's calls use the very same PBX ids and call_ids cannot clash across accounts.
    bob_ids = add_calls(bob.account_id, [new_call(bob.account_id, n) for n in range(2)])
    assert ids(client.get(URL, headers=alice.headers)) == alice_ids
    assert ids(client.get(URL, headers=bob.headers)) == bob_ids
    for params in (
        {"filter[src]": "100"},
        {"account_id": str(alice.account_id)},
        {"filter[account_id]": str(alice.account_id)},
        {"per_page": "300"},
    ):
        response = client.get(URL, params=params, headers=bob.headers)
        assert response.status_code in (200, 400)
        if response.status_code == 200:
            assert set(ids(response)) <= set(bob_ids)
    for call_pk in alice_ids:
        response = client.get(f"{URL}/{call_pk}", headers=bob.headers)
        assert (response.status_code, response.json()) == (404, {"message": "Call not found."})


def test_show(client: TestClient, seeded: list[int], tenant: Tenant) -> None:
    response = client.get(f"{URL}/2", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json() == {
        "data": {
            "id": 2,
            "call_id": new_call(tenant.account_id, 2).call_id,
            "date_time": "2026-01-13 17:02:00",
            "src": "998935550000",
            "dst": "101",
            "external_number": "712005060",
            "duration": 61,
            "conversation": 0,
            "type": {"number": 1, "name": "Incoming"},
            "status": {"number": 2, "name": "Not answered"},
            "recorded_file_url": None,
            "integration": [],
            "disposition": "BUSY",
            "answered_at": None,
            "ended_at": "2026-01-13 17:03:01",
            "pbx_call_id": "pbx-2",
            "legs": 1,
            "caller_name": None,  # ingested as JSON: no caller id, no legs
            "wait": None,
            "route": [],
        }
    }
    answered = client.get(f"{URL}/1", headers=tenant.headers).json()["data"]
    assert (answered["answered_at"], answered["ended_at"]) == (
        "2026-01-13 17:01:10",
        "2026-01-13 17:01:30",
    )


@pytest.mark.parametrize("call_pk", ["0", "-1", "abc", "1.5", "99999", "9" * 40, "%00", "1%20"])
def test_show_not_found(
    client: TestClient, seeded: list[int], tenant: Tenant, call_pk: str
) -> None:
    response = client.get(f"{URL}/{call_pk}", headers=tenant.headers)
    assert (response.status_code, response.json()) == (404, {"message": "Call not found."})


@pytest.mark.parametrize(
    "query",
    [
        "filter=x",
        "filter[]=1",
        "filter[src][]=1&filter[src][]=2",
        "filter[src][a][b]=1",
        "per_page[]=1&page[]=2&sort[]=id",
        "per_page=" + "9" * 10_000,
        "page=" + "9" * 10_000,
        "filter[src]=" + "x" * 10_000,
        "filter[src]=" + "," * 10_000,
        "filter[duration]=" + "1," * 5_000,
        "filter[from]=%ff%fe",
        "filter[src]=%ff%fe%00",
        "filter%5Bsrc=1",
        "sort=" + "-" * 500,
        "sort=%00",
        "%ff=1",
        "a[b][c][d][e][f][g][h][i][j]=1",
        "filter[type]=1e3",
        "filter[duration]=>9223372036854775807",
        "filter[duration]=-9223372036854775808",
        "filter[to]=9999-12-31&filter[from]=0001-01-01",
    ],
)
def test_malformed_input_never_500(
    client: TestClient, seeded: list[int], tenant: Tenant, query: str
) -> None:
    response = client.get(f"{URL}?{query}", headers=tenant.headers)
    assert response.status_code in (200, 400, 422), response.text
    assert response.headers["content-type"] == "application/json"
    assert "message" in response.json() or "data" in response.json()


@contextmanager
def counting_statements(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_page_costs_the_same_queries_whatever_its_size(
    client: TestClient, tenant: Tenant, add_calls: AddCalls, db: Engine
) -> None:
    a = tenant.account_id
    call_pks = add_calls(a, [new_call(a, n) for n in range(40)])
    with db.begin() as conn:
        for pk in call_pks:
            store.add_integration(conn, a, pk, "amocrm", "pending")
    counts = []
    for per_page in (1, 40):
        client.get(URL, params={"per_page": per_page}, headers=tenant.headers)  # warm token touch
        with counting_statements(db) as statements:
            body = client.get(URL, params={"per_page": per_page}, headers=tenant.headers).json()
        assert len(body["data"]) == per_page
        assert all(len(item["integration"]) == 1 for item in body["data"])
        counts.append(len([s for s in statements if s.lstrip().upper().startswith("SELECT")]))
    # token lookup, count, page, integrations of the page
    assert counts == [4, 4]


def test_unknown_routes_and_methods_are_json(client: TestClient, tenant: Tenant) -> None:
    response = client.get("/api/v1/nope", headers=tenant.headers)
    assert (response.status_code, response.json()) == (
        404,
        {"message": "The route api/v1/nope could not be found."},
    )
    response = client.delete(URL, headers=tenant.headers)
    assert response.status_code == 405
    assert response.json() == {
        "message": "The DELETE method is not supported for route api/v1/call-history."
    }
