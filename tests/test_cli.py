"""The `callhistory` command line, run in-process against the test database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from callhistory import migrate
from callhistory.cli import app
from tests.conftest import PASSWORD, Tenant


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
    body = client.get("/api/v1/call-history", headers={"Authorization": f"Bearer {second}"}).json()
    assert body["meta"]["total"] == 200
    # The new token replaced the old one: tokens do not pile up with every `make run`.
    old = client.get("/api/v1/call-history", headers={"Authorization": f"Bearer {token}"})
    assert old.status_code == 401
    types = {
        n: client.get(
            "/api/v1/call-history",
            params={"filter[type]": n, "per_page": 1},
            headers={"Authorization": f"Bearer {second}"},
        ).json()["meta"]["total"]
        for n in (1, 2, 3)
    }
    assert all(count > 10 for count in types.values()), types
    # Every answered demo call's recording plays: a short WAV clip, served in ranges.
    answered = client.get(
        "/api/v1/call-history",
        params={"filter[status]": "1", "per_page": 300},
        headers={"Authorization": f"Bearer {second}"},
    ).json()["data"]
    urls = {call["recorded_file_url"] for call in answered}
    assert None not in urls and len(answered) > 100
    paths = {url.split("/storage/monitor/")[1].split("?")[0] for url in urls}
    assert paths == {f"demo/clip-{n}.wav" for n in range(8)}
    url = next(iter(urls))
    whole = client.get(url)
    assert (whole.status_code, whole.headers["content-type"]) == (200, "audio/wav")
    assert whole.content[:4] == b"RIFF" and len(whole.content) > 40_000  # seconds of audio
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert (part.status_code, len(part.content)) == (206, 100)


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


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"DATABASE_URL": "mysql://x"}, ["accounts", "show", "1"], "needs a database driver"),
        (
            {"DATABASE_URL": "notaurl"},
            ["accounts", "show", "1"],
            "DATABASE_URL is not a database URL",
        ),
        (
            {"APP_KEY": "short"},
            ["accounts", "show", "1"],
            "APP_KEY: must be at least 32 characters",
        ),
        ({"DATA_DIR": "/proc/nope"}, ["accounts", "show", "1"], "cannot use DATA_DIR /proc/nope"),
        ({"TRUSTED_PROXIES": "nope"}, ["accounts", "show", "1"], "TRUSTED_PROXIES: "),
        ({}, ["serve", "--port", "99999"], "Invalid value for '--port'"),
    ],
)
def test_a_users_mistake_is_one_error_line_not_a_traceback(
    tmp_path: Path, env: dict[str, str], args: list[str], expected: str
) -> None:
    full_env = {**os.environ, "DATA_DIR": str(tmp_path), **env}
    if "DATABASE_URL" not in env:
        full_env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "callhistory", *args],
        capture_output=True, text=True, check=False, env=full_env, timeout=60,
    )  # fmt: skip
    assert result.returncode in (1, 2)
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    if result.returncode == 1:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_one_version_and_the_root_route(client: TestClient) -> None:
    from importlib.metadata import version

    assert client.get("/openapi.json").json()["info"]["version"] == version("callhistory")
    response = client.get("/", follow_redirects=False)  # the call list's page, logged out
    assert (response.status_code, response.headers["location"]) == (303, "/login?next=%2F")
    response = client.get("/nothing")
    assert (response.status_code, response.json()) == (
        404,
        {"message": "The route nothing could not be found."},
    )


def test_head_names_the_newest_migration(db: Engine) -> None:
    """Commands skip Alembic when the database is at migrate.HEAD: it must be the real head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "callhistory:migrations")
    assert ScriptDirectory.from_config(config).get_current_head() == migrate.HEAD
    assert migrate.current_revision(db) == migrate.HEAD


def test_the_command_line_loads_no_database_library_until_a_command_runs() -> None:
    """`--help` and argument mistakes answer without importing SQLAlchemy, pydantic-settings,
    httpx, Alembic or FastAPI (seconds of start-up on a small machine)."""
    heavy = ["sqlalchemy", "pydantic_settings", "httpx", "alembic", "fastapi", "argon2"]
    code = (
        "import sys; from callhistory.cli import app; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_info_says_where_everything_is_and_creates_nothing(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    unset = dict.fromkeys(["DATABASE_URL", "APP_KEY", "RECORDINGS_DIR", "PUBLIC_URL"])
    env: dict[str, str | None] = {"DATA_DIR": str(fresh), **unset}
    result = CliRunner().invoke(app, ["info"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1:] == [
        f"data dir:   {fresh} (DATA_DIR)",
        f"database:   {fresh / 'callhistory.sqlite3'} (SQLite, not created yet)",
        f"recordings: {fresh / 'recordings'} (RECORDINGS_DIR; account N's files in N/, unless "
        "`accounts configure --recordings-dir`)",
        f"app key:    {fresh / 'app.key'}, created at the first signed link",
        "public url: the URL each request came in on",
    ]
    assert not fresh.exists()


def test_info_reads_an_existing_database(db: Engine, cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["info"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert f"schema:     {migrate.HEAD} (up to date; every command brings it up to date)" in (
        result.stdout.splitlines()
    )
    assert "accounts:   0" in result.stdout.splitlines()
    assert "app key:    from APP_KEY" in result.stdout.splitlines()


def test_list_accounts_users_tokens_and_revoke_one(
    db: Engine, client: TestClient, cli_env: dict[str, str]
) -> None:
    runner = CliRunner()

    def run(*args: str) -> list[str]:
        result = runner.invoke(app, list(args), env=cli_env)
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    assert run("accounts", "create", "Acme LLC") == ["1"]
    run("users", "create", "--account", "1", "--email", "boss@acme.uz", "--name", "Boss",
        "--password", "long-enough-password")  # fmt: skip
    token = run("tokens", "create", "--email", "boss@acme.uz", "--name", "crm")[-1]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/call-history", headers=headers).status_code == 200

    assert run("accounts", "list") == [
        "ID  NAME      TIMEZONE       USERS",
        "1   Acme LLC  Asia/Tashkent  1",
    ]
    users = run("users", "list", "--account", "1")
    assert users[0].split() == ["ID", "EMAIL", "NAME", "ROLE", "EXTENSIONS", "CREATED", "STATUS"]
    assert users[1].split()[:5] == ["1", "boss@acme.uz", "Boss", "ADMIN", "-"]
    assert users[1].split()[-1] == "active"
    tokens = run("tokens", "list", "--email", "boss@acme.uz")
    assert tokens[0].split() == ["ID", "NAME", "ABILITIES", "LAST", "USED", "CREATED"]
    assert tokens[1].split()[:3] == ["1", "crm", "*"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", tokens[1].split()[3])  # used once, above
    assert token.split("|")[1] not in "\n".join(tokens)  # never the secret

    assert run("tokens", "revoke", "1") == ["token 1 revoked"]
    assert client.get("/api/v1/call-history", headers=headers).status_code == 401
    again = runner.invoke(app, ["tokens", "revoke", "1"], env=cli_env)
    assert (again.exit_code, again.stderr) == (1, "error: No token with id 1.\n")
    missing = runner.invoke(app, ["users", "list", "--account", "9"], env=cli_env)
    assert (missing.exit_code, missing.stderr) == (1, "error: No account with id 9.\n")


def test_reset_a_password_and_optionally_revoke_the_tokens(
    db: Engine, client: TestClient, tenant: Tenant, cli_env: dict[str, str]
) -> None:
    runner = CliRunner()
    login = "/api/v1/auth/login"
    base = ["users", "reset-password", "--email", tenant.email]
    kept = runner.invoke(app, [*base, "--password", "first-new-password"], env=cli_env)
    assert (kept.exit_code, kept.stdout) == (0, "password changed; tokens revoked: 0\n")
    assert client.get("/api/v1/call-history", headers=tenant.headers).status_code == 200
    body = {"email": tenant.email, "password": "first-new-password"}
    assert client.post(login, json=body).status_code == 200

    prompted = runner.invoke(
        app, [*base, "--revoke-tokens"], input="second-new-password\nsecond-new-password\n",
        env=cli_env,
    )  # fmt: skip
    assert prompted.exit_code == 0, prompted.output
    assert prompted.stdout.endswith("password changed; tokens revoked: 2\n")  # its own + login's
    assert client.get("/api/v1/call-history", headers=tenant.headers).status_code == 401
    assert client.post(login, json=body).status_code == 422
    body["password"] = "second-new-password"
    assert client.post(login, json=body).status_code == 200

    unknown = runner.invoke(
        app, ["users", "reset-password", "--email", "nobody@example.com", "--password", "x"],
        env=cli_env,
    )  # fmt: skip
    assert (unknown.exit_code, unknown.stderr) == (
        1,
        "error: No user with email nobody@example.com.\n",
    )


def test_disable_and_enable_a_user(
    client: TestClient, tenant: Tenant, cli_env: dict[str, str]
) -> None:
    runner = CliRunner()
    login = {"email": tenant.email, "password": PASSWORD}

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=cli_env)
        return result.exit_code, result.stdout + result.stderr

    assert run("users", "disable", "--email", tenant.email) == (0, f"{tenant.email} disabled\n")
    assert run("users", "disable", "--email", tenant.email) == (
        0,
        f"{tenant.email} was already disabled\n",
    )
    listed = runner.invoke(app, ["users", "list", "--account", str(tenant.account_id)], env=cli_env)
    assert re.search(r"disabled \d{4}-\d{2}-\d{2}$", listed.stdout.splitlines()[1])
    # Every token refused, in every route; no login.
    for path in ("/api/v1/call-history", "/api/v1/auth/me", "/api/v1/statistic/heatmap"):
        response = client.get(path, headers=tenant.headers)
        assert (response.status_code, response.json()) == (401, {"message": "Unauthenticated."})
    refused = client.post("/api/v1/auth/login", json=login)
    assert refused.status_code == 422

    assert run("users", "enable", "--email", tenant.email.upper()) == (
        0,
        f"{tenant.email.upper()} enabled\n",
    )
    assert client.get("/api/v1/call-history", headers=tenant.headers).status_code == 200
    assert client.post("/api/v1/auth/login", json=login).status_code == 200
    assert run("users", "enable", "--email", "nobody@example.com") == (
        1,
        "error: No user with email nobody@example.com.\n",
    )
