"""One account must never reach another's recordings: each account's paths resolve only inside its
own root, signatures cover the account, delete and purge touch only the account's unshared files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text
from typer.testing import CliRunner

from callhistory import accounts, migrate, recordings, signing, store
from callhistory.cli import app
from callhistory.schema import calls, make_engine
from tests.conftest import TEST_APP_KEY, Tenant, new_call
from tests.test_ingest_api import call
from tests.test_recordings import write_wav

REC = "2026/10/06/1791281197.2.wav"
URL = "/api/v1/call-history"
KEY = TEST_APP_KEY.encode()
NOT_FOUND = {"message": "Recording not found."}
UNAUTHORIZED = {"message": "This action is unauthorized."}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "recordings"


@pytest.fixture
def rclient(make_client: Callable[..., TestClient], base: Path) -> TestClient:
    return make_client(recordings_dir=base)


@pytest.fixture
def cli_env(data_dir: Path, base: Path) -> dict[str, str]:
    """The environment of a CLI command on the tests' database and recordings."""
    return {
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "RECORDINGS_DIR": str(base),
    }


def ingest_with(client: TestClient, tenant: Tenant, recording: str, n: int = 1) -> dict[str, str]:
    item = call(pbx_call_id=f"attack-{n}", date_time="2020-01-01 10:00:00", recording=recording)
    response = client.post(URL, json=[item], headers=tenant.headers)
    assert response.status_code == 201, response.text
    data: dict[str, str] = response.json()["data"][0]
    return data


def test_a_foreign_path_never_reaches_the_other_accounts_file(
    rclient: TestClient,
    make_tenant: Callable[..., Tenant],
    add_calls: Callable[..., list[int]],
    base: Path,
    cli_env: dict[str, str],
) -> None:
    victim, attacker = make_tenant(), make_tenant()
    audio = write_wav(base / str(victim.account_id) / REC)
    (victim_pk,) = add_calls(victim.account_id, [new_call(victim.account_id, 1, recording=REC)])
    victim_url = rclient.get(f"{URL}/{victim_pk}", headers=victim.headers).json()["data"][
        "recorded_file_url"
    ]
    assert rclient.get(victim_url).content == audio

    # 1. B ingests a call naming A's path: its signed link is for B's account, B's root: 404.
    stolen = ingest_with(rclient, attacker, REC)
    assert f"account={attacker.account_id}&" in stolen["recorded_file_url"]
    response = rclient.get(stolen["recorded_file_url"])
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    # 2. B's own token reads the path: resolved in B's root only.
    response = rclient.get(f"/storage/monitor/{REC}", headers=attacker.headers)
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    # 3. B rewrites its link to claim A's account: the signature does not cover it.
    forged = stolen["recorded_file_url"].replace(
        f"account={attacker.account_id}&", f"account={victim.account_id}&"
    )
    response = rclient.get(forged)
    assert (response.status_code, response.json()) == (403, UNAUTHORIZED)
    # 4. B deletes "its" recording: the link goes, A's file stays.
    stolen_pk = stolen["id"]
    assert (
        rclient.delete(f"{URL}/{stolen_pk}/recording", headers=attacker.headers).status_code == 204
    )
    assert (base / str(victim.account_id) / REC).read_bytes() == audio
    # 5. B purges with a short retention: A's file stays.
    ingest_with(rclient, attacker, REC, n=2)
    runner = CliRunner()
    configure = ["accounts", "configure", str(attacker.account_id)]
    assert (
        runner.invoke(app, [*configure, "--recording-retention-days", "1"], env=cli_env).exit_code
        == 0
    )
    purged = runner.invoke(
        app, ["recordings", "purge", "--account", str(attacker.account_id)], env=cli_env
    )
    assert (
        "deleted 0 files (0.0 MB) of 1 expired calls; 1 files were already missing" in purged.output
    )
    assert (base / str(victim.account_id) / REC).read_bytes() == audio
    # A is untouched throughout.
    assert rclient.get(victim_url).content == audio
    assert rclient.get(f"/storage/monitor/{REC}", headers=victim.headers).content == audio


def test_accounts_sharing_a_root_never_delete_each_others_files(
    rclient: TestClient,
    make_tenant: Callable[..., Tenant],
    add_calls: Callable[..., list[int]],
    db: Engine,
    base: Path,
    tmp_path: Path,
) -> None:
    shared = tmp_path / "pbx-monitor"
    a, b = make_tenant(), make_tenant()
    with db.begin() as conn:
        accounts.set_recordings_dir(conn, base, a.account_id, shared)
        accounts.set_recordings_dir(conn, base, b.account_id, shared)
    audio = write_wav(shared / REC)
    add_calls(a.account_id, [new_call(a.account_id, 1, recording=REC)])
    (b_pk,) = add_calls(b.account_id, [new_call(b.account_id, 1, recording=REC)])
    # A deliberate share (one PBX, two accounts): both may hear the file...
    assert rclient.get(f"/storage/monitor/{REC}", headers=b.headers).content == audio
    # ...but B deleting its link keeps the file A's call still links.
    assert rclient.delete(f"{URL}/{b_pk}/recording", headers=b.headers).status_code == 204
    assert (shared / REC).read_bytes() == audio
    with db.connect() as conn:
        roots = recordings.AccountRoots(base, db)
        sharing = accounts.accounts_sharing_root(conn, base, a.account_id)
        assert sharing == [b.account_id]
        deleted = recordings.delete_unshared(conn, roots.storage(a.account_id), sharing, REC)
    assert deleted == len(audio) and not (shared / REC).exists()


def test_recordings_dirs_never_nest(
    make_tenant: Callable[..., Tenant], db: Engine, base: Path, tmp_path: Path
) -> None:
    a, b = make_tenant(), make_tenant()
    with db.begin() as conn:
        accounts.set_recordings_dir(conn, base, a.account_id, tmp_path / "x" / "a")
        for bad, why in [
            (tmp_path / "x" / "a" / "inner", "overlaps account 1's"),
            (tmp_path / "x", "overlaps account 1's"),
            (tmp_path, "contains RECORDINGS_DIR"),
            (base / "7", "lies inside RECORDINGS_DIR"),
            (base / str(a.account_id), "lies inside RECORDINGS_DIR"),
        ]:
            with pytest.raises(accounts.AccountError, match=why):
                accounts.set_recordings_dir(conn, base, b.account_id, bad)
        accounts.set_recordings_dir(conn, base, b.account_id, base / str(b.account_id))
        assert accounts.recordings_root(conn, base, b.account_id) == base.resolve() / "2"
        # A single-tenant install may use RECORDINGS_DIR itself; a new account then needs its own.
        accounts.set_recordings_dir(conn, base, a.account_id, None)
        with pytest.raises(accounts.AccountError, match="overlaps account 2's"):
            accounts.set_recordings_dir(conn, base, a.account_id, base)


def test_cli_sets_and_clears_the_recordings_dir(
    make_tenant: Callable[..., Tenant], cli_env: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()
    tenant = make_tenant()
    own = tmp_path / "spool" / "monitor"
    configure = ["accounts", "configure", str(tenant.account_id), "--recordings-dir"]
    result = runner.invoke(app, [*configure, str(own)], env=cli_env)
    assert result.exit_code == 0 and f'"recordings_dir": "{own}"' in result.output
    created = runner.invoke(
        app, ["accounts", "create", "Beta", "--recordings-dir", str(own / "x")], env=cli_env
    )
    assert created.exit_code == 1 and "overlaps account 1's" in created.output
    result = runner.invoke(app, [*configure, ""], env=cli_env)
    assert result.exit_code == 0 and '"recordings_dir": null' in result.output


@pytest.fixture
def old_db(tmp_path: Path) -> Iterator[Engine]:
    """A database at the schema before per-account roots (a file of its own)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    migrate.upgrade(engine, revision="0005")
    yield engine
    engine.dispose()


def add_old(engine: Engine, links: list[tuple[int, str]]) -> None:
    """Accounts 1..n and their calls with recordings, as stored before revision 0006."""
    with engine.begin() as conn:
        now = store.utcnow()
        for account in sorted({a for a, _ in links}):
            conn.execute(
                text(
                    "INSERT INTO accounts (id, name, timezone, created_at, updated_at)"
                    " VALUES (:id, :name, 'Asia/Tashkent', :now, :now)"
                ),
                {"id": account, "name": f"Old {account}", "now": now},
            )
        for n, (account, path) in enumerate(links, 1):
            values = store._row_values(account, new_call(account, n, recording=path), now)
            conn.execute(calls.insert().values(**values))


def test_migration_gives_existing_recordings_to_their_own_account(
    old_db: Engine, tmp_path: Path
) -> None:
    """Calls stored before per-account roots keep playing for their own account; a path two
    accounts link goes to the account that linked it first, the later link is cleared."""
    legacy = tmp_path / "legacy"
    add_old(old_db, [(1, "x/a.wav"), (2, "x/b.wav"), (2, "x/a.wav"), (3, "x/gone.wav")])
    a_audio, b_audio = write_wav(legacy / "x/a.wav"), write_wav(legacy / "x/b.wav", 0.5)
    migrate.upgrade(old_db, legacy)
    assert (legacy / "1/x/a.wav").read_bytes() == a_audio
    assert (legacy / "2/x/b.wav").read_bytes() == b_audio
    assert not (legacy / "x/a.wav").exists() and not (legacy / "2/x/a.wav").exists()
    with old_db.connect() as conn:
        links = conn.execute(select(calls.c.account_id, calls.c.recording).order_by(calls.c.id))
        assert [tuple(r) for r in links] == [
            (1, "x/a.wav"), (2, "x/b.wav"), (2, None), (3, "x/gone.wav")
        ]  # fmt: skip
        for account in (1, 2, 3):
            assert accounts.recordings_root(conn, legacy, account) == legacy.resolve() / str(
                account
            )


def test_migration_of_a_single_tenant_keeps_its_directory(old_db: Engine, tmp_path: Path) -> None:
    legacy = tmp_path / "monitor"
    add_old(old_db, [(1, REC)])
    audio = write_wav(legacy / REC)
    migrate.upgrade(old_db, legacy)
    with old_db.connect() as conn:
        assert accounts.recordings_root(conn, tmp_path / "elsewhere", 1) == legacy.resolve()
    assert (legacy / REC).read_bytes() == audio


def test_signatures_cover_the_account() -> None:
    assert signing.signature(KEY, 1, REC) != signing.signature(KEY, 2, REC)
    assert signing.verify(KEY, 1, REC, signing.signature(KEY, 1, REC), None)
    assert not signing.verify(KEY, 2, REC, signing.signature(KEY, 1, REC), None)
    assert signing.recording_url("https://x", 3, REC, KEY) == (
        f"https://x/storage/monitor/{REC}?account=3&signature={signing.signature(KEY, 3, REC)}"
    )


def test_purge_of_one_account_leaves_calls_of_another_with_the_same_path(
    make_tenant: Callable[..., Tenant],
    add_calls: Callable[..., list[int]],
    db: Engine,
    base: Path,
) -> None:
    a, b = make_tenant(), make_tenant()
    old = datetime.now() - timedelta(days=30)
    for t in (a, b):
        write_wav(base / str(t.account_id) / REC)
        add_calls(t.account_id, [new_call(t.account_id, 1, recording=REC, started_at=old)])
    with db.begin() as conn:
        accounts.set_recording_retention(conn, a.account_id, 7)
    report = recordings.purge(db, recordings.AccountRoots(base, db), store.utcnow())
    assert (report.files, report.calls, report.missing, report.shared) == (1, 1, 0, 0)
    assert not (base / str(a.account_id) / REC).exists()
    assert (base / str(b.account_id) / REC).exists()
