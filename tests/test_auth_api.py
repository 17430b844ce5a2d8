"""The Auth endpoints and Sanctum-format tokens."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from callhistory.schema import personal_access_tokens
from tests.conftest import PASSWORD, Tenant

LOGIN = "/api/v1/auth/login"
BAD = "These credentials do not match our records."


def login(client: TestClient, email: str, password: str = PASSWORD) -> str:
    response = client.post(LOGIN, json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["result"]["access_token"]
    return token


def test_login_returns_a_sanctum_token_stored_as_sha256(
    client: TestClient, tenant: Tenant, db: Engine
) -> None:
    response = client.post(LOGIN, json={"email": tenant.email.upper(), "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    token = body["result"]["access_token"]
    assert body == {
        "status": "success",
        "code": 200,
        "result": {"access_token": token},
        "message": "User successfully authenticated",
    }
    match = re.fullmatch(r"(\d+)\|([A-Za-z0-9]{40})([0-9a-f]{8})", token)
    assert match is not None
    token_id, entropy, crc = match.groups()
    assert crc == f"{zlib.crc32(entropy.encode()):08x}"
    with db.connect() as conn:
        stored = conn.execute(
            select(personal_access_tokens.c.token, personal_access_tokens.c.abilities).where(
                personal_access_tokens.c.id == int(token_id)
            )
        ).one()
    assert stored.token == hashlib.sha256((entropy + crc).encode()).hexdigest()
    assert stored.abilities == '["*"]'
    assert token not in str(list(stored))
    assert (
        client.get("/api/v1/call-history", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )


def test_a_token_without_its_id_prefix_still_works(client: TestClient, tenant: Tenant) -> None:
    secret = tenant.token.partition("|")[2]
    response = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    other_id = f"{int(tenant.token.partition('|')[0]) + 1}|{secret}"
    response = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {other_id}"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {},
            {
                "email": ["The email field is required."],
                "password": ["The password field is required."],
            },
        ),
        (
            {"email": "x", "password": "y"},
            {"email": ["The email field must be a valid email address."]},
        ),
        ({"email": ["a@b.c"], "password": "y"}, {"email": ["The email field must be a string."]}),
        ({"email": "a@b.c", "password": 5}, {"password": ["The password field must be a string."]}),
    ],
)
def test_login_validation(
    client: TestClient, body: dict[str, object], errors: dict[str, list[str]]
) -> None:
    response = client.post(LOGIN, json=body)
    assert response.status_code == 422
    assert response.json()["errors"] == errors


def test_wrong_credentials(client: TestClient, tenant: Tenant) -> None:
    for email, password in ((tenant.email, "wrong-password"), ("nobody@example.com", PASSWORD)):
        response = client.post(LOGIN, json={"email": email, "password": password})
        assert (response.status_code, response.json()) == (
            422,
            {"message": BAD, "errors": {"email": [BAD]}},
        )


def test_failed_logins_are_throttled(
    make_client: Callable[..., TestClient], tenant: Tenant, make_tenant: Callable[..., Tenant]
) -> None:
    client = make_client(login_max_attempts=3)
    for _ in range(3):
        response = client.post(LOGIN, json={"email": tenant.email, "password": "nope-nope"})
        assert response.status_code == 422
    for password in ("nope-nope", PASSWORD):  # locked out, even with the right password
        response = client.post(LOGIN, json={"email": tenant.email, "password": password})
        assert (response.status_code, response.json()) == (429, {"message": "Too Many Attempts."})
        assert 1 <= int(response.headers["retry-after"]) <= 60
    # Another user is not locked out by someone else's failures.
    other = make_tenant()
    assert client.post(LOGIN, json={"email": other.email, "password": PASSWORD}).status_code == 200


def test_throttle_forgets_after_the_decay(
    make_client: Callable[..., TestClient], tenant: Tenant
) -> None:
    client = make_client(login_max_attempts=1, login_decay_seconds=1)
    assert (
        client.post(LOGIN, json={"email": tenant.email, "password": "nope-nope"}).status_code == 422
    )
    assert client.post(LOGIN, json={"email": tenant.email, "password": PASSWORD}).status_code == 429
    throttle = client.app.state.login_throttle  # type: ignore[attr-defined]
    throttle.decay_seconds = 0  # the window has passed
    assert client.post(LOGIN, json={"email": tenant.email, "password": PASSWORD}).status_code == 200


def test_me(client: TestClient, tenant: Tenant) -> None:
    response = client.get("/api/v1/auth/me", headers=tenant.headers)
    assert response.status_code == 200
    body = response.json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000000Z", body["result"]["created_at"])
    assert body == {
        "status": "success",
        "code": 200,
        "result": {
            "id": tenant.user_id,
            "name": "User 1",
            "email": tenant.email,
            "type": {"number": 1, "name": "ADMIN"},  # a user sees the whole account
            "created_at": body["result"]["created_at"],
        },
        "message": "User successfully retrieved",
    }
    assert client.get("/api/v1/auth/me").json() == {"message": "Unauthenticated."}


def test_logout_revokes_only_the_token_in_use(client: TestClient, tenant: Tenant) -> None:
    second = login(client, tenant.email)
    response = client.post("/api/v1/auth/logout", headers=tenant.headers)
    assert response.json() == {
        "status": "success",
        "code": 200,
        "result": None,
        "message": "User successfully logged out",
    }
    assert client.get("/api/v1/auth/me", headers=tenant.headers).status_code == 401
    assert (
        client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {second}"}).status_code
        == 200
    )


def test_change_password(client: TestClient, tenant: Tenant) -> None:
    other = login(client, tenant.email)
    url = "/api/v1/auth/change-password"
    body = {"old_password": PASSWORD, "password": "brand-new", "password_confirmation": "brand-new"}
    response = client.post(url, json=body, headers=tenant.headers)
    assert response.json() == {
        "status": "success",
        "code": 200,
        "result": None,
        "message": "Password successfully changed",
    }
    # The token in use keeps working; the user's other tokens are revoked.
    assert client.get("/api/v1/auth/me", headers=tenant.headers).status_code == 200
    assert (
        client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {other}"}).status_code
        == 401
    )
    assert client.post(LOGIN, json={"email": tenant.email, "password": PASSWORD}).status_code == 422
    login(client, tenant.email, "brand-new")


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {},
            {
                "old_password": ["The old password field is required."],
                "password": ["The password field is required."],
            },
        ),
        (
            {"old_password": PASSWORD, "password": "short", "password_confirmation": "short"},
            {"password": ["The password field must be at least 6 characters."]},
        ),
        (
            {"old_password": PASSWORD, "password": "long-enough", "password_confirmation": "other"},
            {"password": ["The password field confirmation does not match."]},
        ),
        (
            {
                "old_password": "wrong",
                "password": "long-enough",
                "password_confirmation": "long-enough",
            },
            {"old_password": ["The old password is incorrect."]},
        ),
    ],
)
def test_change_password_validation(
    client: TestClient, tenant: Tenant, body: dict[str, str], errors: dict[str, list[str]]
) -> None:
    response = client.post("/api/v1/auth/change-password", json=body, headers=tenant.headers)
    assert response.status_code == 422
    assert response.json()["errors"] == errors
    login(client, tenant.email)  # the password did not change
