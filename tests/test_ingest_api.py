"""POST /api/v1/call-history: the JSON ingest for any PBX."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, true

from callhistory import accounts, signing
from callhistory.classify import PbxConfig
from callhistory.models import derive_call_id
from callhistory.schema import calls
from tests.conftest import TEST_APP_KEY, Tenant

URL = "/api/v1/call-history"


def call(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pbx_call_id": "1768308876.2",
        "date_time": "2026-01-13 17:54:36",
        "src": "100",
        "dst": "999995998",
        "external_number": "781130590",
        "duration": 23,
        "conversation": 8,
        "type": 2,
        "status": 1,
        "recording": "2026/01/13/1768308876.2.wav",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def test_ingest_creates_and_is_idempotent(client: TestClient, tenant: Tenant) -> None:
    response = client.post(URL, json=[call()], headers=tenant.headers)
    assert response.status_code == 201, response.text
    a = tenant.account_id
    signature = signing.signature(TEST_APP_KEY.encode(), a, "2026/01/13/1768308876.2.wav")
    expected_item = {
        "id": 1,
        "call_id": derive_call_id(tenant.account_id, "1768308876.2"),
        "date_time": "2026-01-13 17:54:36",
        "src": "100",
        "dst": "999995998",
        "external_number": "781130590",
        "duration": 23,
        "conversation": 8,
        "type": {"number": 2, "name": "Outgoing"},
        "status": {"number": 1, "name": "Answered"},
        "recorded_file_url": "http://testserver/storage/monitor/2026/01/13/1768308876.2.wav"
        f"?account={a}&signature={signature}",
        "integration": [],
    }
    assert response.json() == {"data": [expected_item], "meta": {"created": 1, "existing": 0}}

    again = client.post(URL, json=[call(), call(pbx_call_id="other")], headers=tenant.headers)
    assert again.status_code == 201
    assert again.json()["meta"] == {"created": 1, "existing": 1}
    first, second = (item["id"] for item in again.json()["data"])
    assert first == 1 and second > 1  # (PostgreSQL may skip ids on a conflict)
    listed = client.get(URL, headers=tenant.headers).json()
    assert [c["id"] for c in listed["data"]] == [1, second]
    assert listed["meta"]["total"] == 2

    shown = client.get(f"{URL}/1", headers=tenant.headers).json()["data"]
    assert {
        k: shown[k] for k in ("disposition", "answered_at", "ended_at", "pbx_call_id", "legs")
    } == {
        "disposition": "ANSWERED",
        "answered_at": "2026-01-13 17:54:51",
        "ended_at": "2026-01-13 17:54:59",
        "pbx_call_id": "1768308876.2",
        "legs": 1,
    }


def test_explicit_call_id_and_duplicates_within_one_body(
    client: TestClient, tenant: Tenant
) -> None:
    call_id = "9B03293E-A0EA-4212-92D1-5848A41D4987"
    items = [call(call_id=call_id), call(call_id=call_id.lower(), src="999")]
    response = client.post(URL, json=items, headers=tenant.headers)
    assert response.status_code == 201
    body = response.json()
    assert body["meta"] == {"created": 1, "existing": 1}
    assert [(i["id"], i["call_id"], i["src"]) for i in body["data"]] == [
        (1, call_id.lower(), "100"),
        (1, call_id.lower(), "100"),
    ]


def test_same_call_id_in_two_accounts(
    client: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    alice, bob = make_tenant(), make_tenant()
    item = call(call_id="9b03293e-a0ea-4212-92d1-5848a41d4987")
    assert client.post(URL, json=[item], headers=alice.headers).json()["meta"]["created"] == 1
    assert client.post(URL, json=[item], headers=bob.headers).json()["meta"]["created"] == 1
    assert [c["id"] for c in client.get(URL, headers=bob.headers).json()["data"]] == [2]


def test_disposition_sets_status(client: TestClient, tenant: Tenant) -> None:
    items = [
        call(pbx_call_id="a", status=..., disposition="BUSY", conversation=0),
        call(pbx_call_id="b", status=..., disposition="ANSWERED"),
        call(pbx_call_id="c", status=2, conversation=0, recording=None, external_number=None),
    ]
    response = client.post(URL, json=items, headers=tenant.headers)
    assert response.status_code == 201, response.text
    assert [i["status"]["number"] for i in response.json()["data"]] == [2, 1, 2]
    shown = [client.get(f"{URL}/{n}", headers=tenant.headers).json()["data"] for n in (1, 3)]
    assert [(s["disposition"], s["answered_at"]) for s in shown] == [
        ("BUSY", None),
        ("NO ANSWER", None),
    ]
    assert shown[1]["recorded_file_url"] is None and shown[1]["external_number"] is None


def test_without_any_id_a_call_gets_a_fresh_uuid(client: TestClient, tenant: Tenant) -> None:
    response = client.post(URL, json=[call(pbx_call_id=...)] * 2, headers=tenant.headers)
    assert response.json()["meta"] == {"created": 2, "existing": 0}


@pytest.mark.parametrize(
    ("item", "errors"),
    [
        ({}, None),  # every required field, checked below
        (call(src=...), {"0.src": ["The 0.src field is required."]}),
        (call(src=""), {"0.src": ["The 0.src field is required."]}),
        (call(src=100), {"0.src": ["The 0.src field must be a string."]}),
        (
            call(src="1" * 256),
            {"0.src": ["The 0.src field must not be greater than 255 characters."]},
        ),
        (call(call_id="nope"), {"0.call_id": ["The 0.call id field must be a valid UUID."]}),
        (
            call(date_time="2026-01-13T17:54:36"),
            {"0.date_time": ["The 0.date time field must match the format Y-m-d H:i:s."]},
        ),
        (
            call(date_time="2026-02-30 10:00:00"),
            {"0.date_time": ["The 0.date time field must match the format Y-m-d H:i:s."]},
        ),
        (
            call(duration=-1),
            {"0.duration": ["The 0.duration field must be between 0 and 2147483647."]},
        ),
        (call(duration="23"), {"0.duration": ["The 0.duration field must be an integer."]}),
        (call(duration=2.5), {"0.duration": ["The 0.duration field must be an integer."]}),
        (call(duration=True), {"0.duration": ["The 0.duration field must be an integer."]}),
        (
            call(duration=10**30),
            {"0.duration": ["The 0.duration field must be between 0 and 2147483647."]},
        ),
        (
            call(conversation=24),
            {"0.conversation": ["The 0.conversation field must be between 0 and 23."]},
        ),
        (call(type=4), {"0.type": ["The selected 0.type is invalid."]}),
        (call(type="2"), {"0.type": ["The selected 0.type is invalid."]}),
        (call(status=3), {"0.status": ["The selected 0.status is invalid."]}),
        (
            call(status=...),
            {"0.status": ["The 0.status field is required when 0.disposition is not present."]},
        ),
        (
            call(disposition="HUNG UP"),
            {"0.disposition": ["The selected 0.disposition is invalid."]},
        ),
        (
            call(disposition="BUSY"),
            {"0.status": ["The 0.status field does not match 0.disposition."]},
        ),
        (
            call(recording="../etc/passwd"),
            {"0.recording": ["The 0.recording field format is invalid."]},
        ),
        (call(recording="/abs.wav"), {"0.recording": ["The 0.recording field format is invalid."]}),
        (call(recording="a//b.wav"), {"0.recording": ["The 0.recording field format is invalid."]}),
        (
            call(recording="a\u0000.wav"),
            {"0.recording": ["The 0.recording field format is invalid."]},
        ),
        (
            call(date_time="0001-01-01 00:00:00"),
            {
                "0.date_time": [
                    "The 0.date time field must be a date after or equal to 1970-01-01 00:00:00."
                ]
            },
        ),
        (
            call(date_time="9999-12-31 23:59:59", duration=2147483647, conversation=0),
            {
                "0.date_time": [
                    "The 0.date time field must be a date before or equal to 2099-12-31 23:59:59."
                ]
            },
        ),
        (call(src="100\u0000"), {"0.src": ["The 0.src field format is invalid."]}),
        (
            call(recording="2026/01/13/a\u0000.wav"),
            {"0.recording": ["The 0.recording field format is invalid."]},
        ),
        ("a string", {"0": ["The 0 field must be an array."]}),
    ],
)
def test_validation(client: TestClient, tenant: Tenant, item: Any, errors: Any) -> None:
    response = client.post(URL, json=[item], headers=tenant.headers)
    assert response.status_code == 422
    body = response.json()
    if errors is None:
        assert list(body["errors"]) == [
            "0.date_time", "0.src", "0.dst", "0.duration", "0.conversation", "0.status"
        ]  # fmt: skip
        assert body["message"] == "The 0.date time field is required. (and 5 more errors)"
    else:
        assert body == {"message": next(iter(errors.values()))[0], "errors": errors}


def test_all_or_nothing(client: TestClient, tenant: Tenant) -> None:
    items = [call(pbx_call_id="ok-1"), call(pbx_call_id="ok-2"), call(pbx_call_id="bad", type=9)]
    response = client.post(URL, json=items, headers=tenant.headers)
    assert response.status_code == 422
    assert response.json()["errors"] == {"2.type": ["The selected 2.type is invalid."]}
    assert client.get(URL, headers=tenant.headers).json()["meta"]["total"] == 0


BODY_ERROR = {
    "message": "The request body must be a JSON array of 1 to 1000 calls.",
    "errors": {"body": ["The request body must be a JSON array of 1 to 1000 calls."]},
}


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"{}", b'{"0": {}}', b"[]", b"null", b"\xff\xfe", b"[" + b"[" * 100_000],
)
def test_body_must_be_an_array(client: TestClient, tenant: Tenant, content: bytes) -> None:
    headers = {**tenant.headers, "Content-Type": "application/json"}
    response = client.post(URL, content=content, headers=headers)
    assert (response.status_code, response.json()) == (422, BODY_ERROR)


def test_batch_limit(client: TestClient, tenant: Tenant) -> None:
    items = [call(pbx_call_id=str(n)) for n in range(1001)]
    response = client.post(URL, json=items, headers=tenant.headers)
    assert (response.status_code, response.json()) == (422, BODY_ERROR)
    response = client.post(URL, json=items[:1000], headers=tenant.headers)
    assert response.json()["meta"] == {"created": 1000, "existing": 0}


def test_big_batches_name_their_own_calls_while_others_store_theirs(
    client: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    """A batch of `bulk.MIN_ROWS` calls or more is inserted in one statement (on SQLite an
    `executemany`, whose new ids are read back after it): each response names, in its order,
    the ids of its own calls, new and existing (its first item new or existing), while three
    accounts store such batches at once."""
    tenants = [make_tenant() for _ in range(3)]
    for tenant in tenants:
        first = [call(pbx_call_id=f"p{n}") for n in range(0, 300, 3)]
        assert client.post(URL, json=first, headers=tenant.headers).status_code == 201
    answers: dict[tuple[int, int], Any] = {}

    def store(tenant: Tenant, round_: int) -> None:
        items = [call(pbx_call_id=f"p{n}", src=f"{round_}") for n in range(300)]
        items = items[round_ * 31 :] + items[: round_ * 31]  # first: p0 was there, p31 is new
        answers[tenant.account_id, round_] = client.post(URL, json=items, headers=tenant.headers)

    threads = [
        threading.Thread(target=store, args=(tenant, round_))
        for round_ in range(2)
        for tenant in tenants
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for tenant in tenants:
        stored = {
            c["id"]: c["call_id"]
            for page in (1, 2)
            for c in client.get(
                URL, params={"per_page": "300", "page": str(page)}, headers=tenant.headers
            ).json()["data"]
        }
        assert len(stored) == 300
        metas = []
        for round_ in range(2):
            body = answers[tenant.account_id, round_].json()
            order = [f"p{n}" for n in range(300)]
            order = order[round_ * 31 :] + order[: round_ * 31]
            expected = [derive_call_id(tenant.account_id, pbx) for pbx in order]
            assert [stored[item["id"]] for item in body["data"]] == expected
            assert [item["call_id"] for item in body["data"]] == expected
            metas.append(body["meta"])
        assert sum(m["created"] for m in metas) == 200  # each new call stored once
        assert all(m["created"] + m["existing"] == 300 for m in metas)


def test_ingest_needs_write_ability(client: TestClient, make_tenant: Callable[..., Tenant]) -> None:
    reader = make_tenant(abilities=("calls:read",))
    response = client.post(URL, json=[call()], headers=reader.headers)
    assert (response.status_code, response.json()) == (
        403,
        {"message": "This action is unauthorized."},
    )
    assert client.post(URL, json=[call()]).status_code == 401


def test_local_time_is_stored_as_utc(client: TestClient, tenant: Tenant, db: Engine) -> None:
    client.post(URL, json=[call(date_time="2026-01-13 23:59:59")], headers=tenant.headers)
    with db.connect() as conn:
        stored = conn.execute(select(calls.c.started_at, calls.c.ended_at)).one()
    assert tuple(stored) == (datetime(2026, 1, 13, 18, 59, 59), datetime(2026, 1, 13, 19, 0, 22))
    response = client.get(URL, params={"filter[to]": "2026-01-13"}, headers=tenant.headers)
    assert [i["date_time"] for i in response.json()["data"]] == ["2026-01-13 23:59:59"]


def test_totals_match_a_real_count(
    client: TestClient, make_tenant: Callable[..., Tenant], db: Engine
) -> None:
    """Unfiltered and type/status totals come from counters; they must equal COUNT(*)."""
    alice, bob = make_tenant(), make_tenant()
    mix = [
        call(pbx_call_id=str(n), type=1 + n % 3, status=1 + n % 2, conversation=0)
        for n in range(40)
    ]
    for tenant in (alice, bob, alice):  # alice's second post is all duplicates
        posted = client.post(URL, json=mix[: 40 if tenant is alice else 7], headers=tenant.headers)
        assert posted.status_code == 201
    client.post(URL, json=[call(pbx_call_id="extra", type=3, status=2)], headers=alice.headers)
    with db.connect() as conn:
        for tenant in (alice, bob):
            for params, condition in (
                ({}, true()),
                ({"filter[type]": "3"}, calls.c.type == 3),
                ({"filter[status]": "2"}, calls.c.status == 2),
                (
                    {"filter[type]": "1,3", "filter[status]": "1"},
                    calls.c.type.in_([1, 3]) & (calls.c.status == 1),
                ),
            ):
                expected = conn.execute(
                    select(func.count()).where(calls.c.account_id == tenant.account_id, condition)
                ).scalar_one()
                body = client.get(URL, params=params, headers=tenant.headers).json()
                assert body["meta"]["total"] == expected, params
    assert client.get(URL, headers=alice.headers).json()["meta"]["total"] == 41


def test_without_type_the_account_layout_classifies(
    client: TestClient, tenant: Tenant, db: Engine
) -> None:
    with db.begin() as conn:
        accounts.set_pbx_config(conn, tenant.account_id, PbxConfig(dids=("781130590",)))
    items = [
        call(pbx_call_id="in", type=..., external_number=..., src="998901234567", dst="101"),
        call(pbx_call_id="out", type=..., external_number=..., src="101", dst="998901234567"),
        call(pbx_call_id="int", type=..., external_number=..., src="101", dst="102"),
        call(
            pbx_call_id="kept", type=..., external_number="712005060", src="101", dst="998901112233"
        ),
    ]
    response = client.post(URL, json=items, headers=tenant.headers)
    assert response.status_code == 201, response.text
    assert [(i["type"]["name"], i["external_number"]) for i in response.json()["data"]] == [
        ("Incoming", "781130590"),
        ("Outgoing", "781130590"),
        ("Internal", None),
        ("Outgoing", "712005060"),
    ]


def test_oversized_body_is_413(client: TestClient, tenant: Tenant) -> None:
    headers = {**tenant.headers, "Content-Type": "application/json"}
    response = client.post(URL, content=b"[" + b" " * (6 * 1024 * 1024) + b"]", headers=headers)
    assert (response.status_code, response.json()) == (
        413,
        {"message": "The request body is too large."},
    )
