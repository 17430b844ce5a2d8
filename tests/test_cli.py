"""The `callhistory` command line, run in-process against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from callhistory.cli import app


@pytest.fixture
def run(db: Engine, data_dir: Path) -> object:
    runner = CliRunner()
    env = {"DATA_DIR": str(data_dir), "DATABASE_URL": os.environ.get("DATABASE_URL", "")}

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.output

    return invoke


def test_accounts_users_tokens(run, client: TestClient) -> None:  # type: ignore[no-untyped-def]
    code, out = run("accounts", "create", "Acme", "--timezone", "Europe/Moscow")
    assert (code, out) == (0, "1\n")
    code, out = run(
        "users", "create", "--account", "1", "--email", "Boss@Acme.test", "--name", "Boss",
        "--password", "secret-1",
    )  # fmt: skip
    assert (code, out) == (0, "1\n")
    code, out = run("tokens", "create", "--email", "boss@acme.test", "--abilities", "calls:read")
    assert code == 0
    token = out.strip().splitlines()[-1]
    assert token.startswith("1|") and len(token) == 2 + 48
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["result"]["email"] == "boss@acme.test"
    post = client.post(
        "/api/v1/call-history", json=[], headers={"Authorization": f"Bearer {token}"}
    )
    assert post.status_code == 403


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("accounts", "create", "Acme", "--timezone", "Mars/Olympus"), "Unknown timezone"),
        (("accounts", "create", " "), "must not be empty"),
        (
            ("users", "create", "--account", "99", "--email", "a@b.c", "--name", "A",
             "--password", "secret-1"),
            "No account with id 99",
        ),
        (
            ("users", "create", "--account", "1", "--email", "a@b.c", "--name", "A",
             "--password", "123"),
            "at least 6 characters",
        ),
        (("tokens", "create", "--email", "nobody@b.c"), "No user with email"),
        (
            ("tokens", "create", "--email", "a@b.c", "--abilities", "calls:delete"),
            "Unknown abilities",
        ),
    ],
)  # fmt: skip
def test_errors_are_one_clear_line(run, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    code, out = run(*args)
    assert code == 1
    assert message in out
    assert "Traceback" not in out


def test_duplicate_email(run) -> None:  # type: ignore[no-untyped-def]
    run("accounts", "create", "Acme")
    args = (
        "users",
        "create",
        "--account",
        "1",
        "--email",
        "a@b.c",
        "--name",
        "A",
        "--password",
        "secret-1",
    )
    assert run(*args)[0] == 0
    code, out = run(*args)
    assert code == 1 and "already exists" in out


def test_demo_is_idempotent(run, client: TestClient) -> None:  # type: ignore[no-untyped-def]
    code, out = run("demo", "--calls", "200")
    assert code == 0, out
    assert "200 calls added" in out
    token = out.strip().splitlines()[-1].removeprefix("token: ")
    assert "curl -H 'Authorization: Bearer " + token in out
    code, out = run("demo", "--calls", "200")
    assert "0 calls added" in out
    second = out.strip().splitlines()[-1].removeprefix("token: ")
    for t in (token, second):
        body = client.get("/api/v1/call-history", headers={"Authorization": f"Bearer {t}"}).json()
        assert body["meta"]["total"] == 200
    types = {
        n: client.get(
            "/api/v1/call-history",
            params={"filter[type]": n, "per_page": 1},
            headers={"Authorization": f"Bearer {token}"},
        ).json()["meta"]["total"]
        for n in (1, 2, 3)
    }
    assert all(count > 10 for count in types.values()), types


def test_db_upgrade_and_help(run) -> None:  # type: ignore[no-untyped-def]
    assert run("db", "upgrade") == (0, "database is up to date\n")
    for command in (
        ["--help"],
        ["serve", "--help"],
        ["demo", "--help"],
        ["tokens", "create", "--help"],
    ):
        code, out = run(*command)
        assert code == 0 and "Usage" in out


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "callhistory", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for command in ("serve", "db", "accounts", "users", "tokens", "demo"):
        assert command in result.stdout
