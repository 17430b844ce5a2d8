"""Recordings: real files on disk, served with signatures or tokens, ranges, caching; delete and
retention."""

from __future__ import annotations

import os
import time
import wave
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from callhistory import accounts, signing
from callhistory.cli import app
from callhistory.recordings import LocalStorage, content_type, safe_path
from tests.conftest import TEST_APP_KEY, Tenant, new_call

REC = "2026/01/13/1768308876.2.wav"
KEY = TEST_APP_KEY.encode()


def write_wav(path: Path, seconds: float = 1.0) -> bytes:
    """A real 8 kHz 16-bit mono WAV, as MixMonitor writes by default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes((n * 7) % 256 for n in range(int(16000 * seconds))))
    return path.read_bytes()


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """RECORDINGS_DIR: each account's default root is a folder in it named by the account id."""
    return tmp_path / "monitor"


@pytest.fixture
def root(base: Path, tenant: Tenant) -> Path:
    """The tenant's own recordings root."""
    return base / str(tenant.account_id)


@pytest.fixture
def audio(root: Path) -> bytes:
    return write_wav(root / REC)


@pytest.fixture
def rclient(make_client: Callable[..., TestClient], base: Path) -> TestClient:
    return make_client(recordings_dir=base)


@pytest.fixture
def with_call(tenant: Tenant, add_calls: Callable[..., list[int]], audio: bytes) -> int:
    return add_calls(tenant.account_id, [new_call(tenant.account_id, 1, recording=REC)])[0]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(path: str = REC, key: bytes = KEY, expires: int | None = None, account: int = 1) -> str:
    query = f"account={account}&" + (f"expires={expires}&" if expires is not None else "")
    signature = signing.signature(key, account, path, expires)
    return f"/storage/monitor/{quote(path)}?{query}signature={signature}"


def test_signed_url_from_the_list_plays(
    rclient: TestClient, tenant: Tenant, with_call: int, audio: bytes
) -> None:
    url = rclient.get("/api/v1/call-history", headers=tenant.headers).json()["data"][0][
        "recorded_file_url"
    ]
    assert url == "http://testserver" + signed()
    response = rclient.get(url)
    assert response.status_code == 200
    assert response.content == audio
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(audio))
    assert response.headers["etag"].startswith('"') and response.headers["last-modified"]


@pytest.mark.parametrize(
    "url",
    [
        f"/storage/monitor/{REC}",
        f"/storage/monitor/{REC}?signature=",
        f"/storage/monitor/{REC}?signature=deadbeef",
        signed().replace("signature=", "signature=0"),
        signed()[:-1] + ("0" if signed()[-1] != "0" else "1"),
        signed(key=b"another-key-" + b"x" * 40),
        signed("2026/01/13/other.wav").replace("other.wav", "1768308876.2.wav"),
        signed(expires=int(time.time()) - 1),
        signed(expires=int(time.time()) + 3600).replace("expires=", "expires=1"),
        signed() + "&expires=abc",
        # an expiring link's signature, with its `expires` dropped
        f"/storage/monitor/{REC}?account=1&signature="
        + signing.signature(KEY, 1, REC, int(time.time()) + 3600),
        # a valid signature, without the account it was made for, or with another
        signed().replace("account=1&", ""),
        signed().replace("account=1&", "account=2&"),
        signed().replace("account=1&", "account=01x&"),
        signed() + "%C2%96%3DZ8%09%C2%B7R",  # not ASCII: once a 500
        f"/storage/monitor/{REC}?account=1&signature=%F2%9C%8F%A6%ED%A0%80",
    ],
)
def test_no_valid_signature_is_403(rclient: TestClient, with_call: int, url: str) -> None:
    response = rclient.get(url)
    assert (response.status_code, response.json()) == (
        403,
        {"message": "This action is unauthorized."},
    )


def test_expiring_links(
    make_client: Callable[..., TestClient], base: Path, tenant: Tenant, with_call: int
) -> None:
    client = make_client(recordings_dir=base, recording_url_ttl=600)
    url = client.get("/api/v1/call-history", headers=tenant.headers).json()["data"][0][
        "recorded_file_url"
    ]
    expires = int(url.split("expires=")[1].split("&")[0])
    assert 0 < expires - time.time() <= 600
    assert client.get(url).status_code == 200
    assert client.get(signed(expires=int(time.time()) + 60)).status_code == 200


def test_rotating_the_app_key_invalidates_links(
    make_client: Callable[..., TestClient], base: Path, with_call: int
) -> None:
    old = signed()
    rotated = make_client(recordings_dir=base, app_key="rotated-" + "k" * 40)
    assert rotated.get(old).status_code == 403
    assert rotated.get(signed(key=("rotated-" + "k" * 40).encode())).status_code == 200


def test_token_access(
    rclient: TestClient,
    tenant: Tenant,
    make_tenant: Callable[..., Tenant],
    with_call: int,
    audio: bytes,
    db: Engine,
    password_hash: str,
) -> None:
    with db.begin() as conn:
        listener = accounts.create_token(conn, tenant.user_id, "player", ("recordings:read",))
        reader_only = accounts.create_token(conn, tenant.user_id, "reader", ("calls:read",))
    url = f"/storage/monitor/{REC}"
    assert rclient.get(url, headers=bearer(listener)).content == audio
    # `account` in the query means nothing to a token: it reads its own account's files only
    assert rclient.get(url + "?account=2", headers=bearer(listener)).content == audio
    assert rclient.get(url, headers=bearer(reader_only)).status_code == 403
    stranger = make_tenant()  # all abilities, but no call links to this file
    assert rclient.get(url, headers=stranger.headers).status_code == 403
    assert rclient.get(url, headers={"Authorization": "Bearer 1|nope"}).status_code == 403


NASTY = [
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "%2e%2e%2fsecret.wav",
    "2026/%2e%2e/%2e%2e/secret.wav",
    "2026/01/13/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.wav",
    "%2fetc%2fpasswd",
    "/etc/passwd",
    "2026/01/13/1768308876.2.wav%00.txt",
    "%00",
    "2026%5c..%5c..%5csecret.wav",
    "..%5csecret.wav",
    "%2e/2026/01/13/1768308876.2.wav",
    "2026/%2e/01/13/1768308876.2.wav",
    "2026//01/13/1768308876.2.wav",
    "2026/01/13/",
    "%252e%252e/secret.wav",
    "%c0%ae%c0%ae/secret.wav",
    "2026/01/13/link-out.wav",
    "2026/01/13/link-dir/passwd",
    "2026/01",
]


@pytest.mark.parametrize("path", NASTY)
def test_paths_outside_the_root_are_404(
    rclient: TestClient, tenant: Tenant, with_call: int, root: Path, path: str
) -> None:
    secret = root.parent / "secret.wav"
    secret.write_bytes(b"RIFF secret")
    (root / "2026/01/13/link-out.wav").symlink_to(secret)
    (root / "2026/01/13/link-dir").symlink_to("/etc", target_is_directory=True)
    # Even a valid signature for the very path does not open it.
    decoded = unquote(path)
    signature = signing.signature(KEY, tenant.account_id, decoded)
    response = rclient.get(
        f"/storage/monitor/{path}?account={tenant.account_id}&signature={signature}",
        headers=tenant.headers,
    )
    assert response.status_code == 404, path
    assert response.json()["message"] in (
        "Recording not found.",
        f"The route {'storage/monitor/' + path} could not be found.",
    ) or response.json()["message"].startswith("The route")
    assert b"secret" not in response.content


@pytest.mark.parametrize(
    ("relative", "ok"),
    [
        (REC, True),
        ("a.wav", True),
        ("....//x", False),
        ("...", True),
        ("", False),
        ("/abs", False),
        ("a/../b", False),
        ("a/./b", False),
        ("a//b", False),
        ("a\\b", False),
        ("a\0b", False),
        ("a/", False),
    ],
)
def test_safe_path(relative: str, ok: bool) -> None:
    assert safe_path(relative) is ok


def test_missing_file_is_404_and_the_list_never_looks(
    rclient: TestClient, tenant: Tenant, add_calls: Callable[..., list[int]]
) -> None:
    add_calls(tenant.account_id, [new_call(tenant.account_id, 1, recording="2026/01/13/gone.wav")])
    listed = rclient.get("/api/v1/call-history", headers=tenant.headers).json()["data"][0]
    assert listed["recorded_file_url"].endswith(
        "gone.wav?account=1&signature=" + signing.signature(KEY, 1, "2026/01/13/gone.wav")
    )
    response = rclient.get(listed["recorded_file_url"])
    assert (response.status_code, response.json()) == (404, {"message": "Recording not found."})


@pytest.mark.parametrize(
    ("range_header", "status", "expected"),
    [
        ("bytes=0-99", 206, (0, 100)),
        ("bytes=-100", 206, (-100, None)),
        ("bytes=100-", 206, (100, None)),
        ("bytes=16000-99999", 206, (16000, None)),
    ],
)
def test_single_ranges(
    rclient: TestClient,
    with_call: int,
    audio: bytes,
    range_header: str,
    status: int,
    expected: tuple[int, int | None],
) -> None:
    response = rclient.get(signed(), headers={"Range": range_header})
    start, end = expected
    part = audio[start:end]
    first = start if start >= 0 else len(audio) + start
    assert response.status_code == status
    assert response.content == part
    assert (
        response.headers["content-range"] == f"bytes {first}-{first + len(part) - 1}/{len(audio)}"
    )
    assert response.headers["content-length"] == str(len(part))


def test_multiple_ranges(rclient: TestClient, with_call: int, audio: bytes) -> None:
    response = rclient.get(signed(), headers={"Range": "bytes=0-9,100-109"})
    assert response.status_code == 206
    assert response.headers["content-type"].startswith("multipart/byteranges; boundary=")
    body = response.content
    assert audio[0:10] in body and audio[100:110] in body
    assert f"Content-Range: bytes 0-9/{len(audio)}".encode() in body
    assert f"Content-Range: bytes 100-109/{len(audio)}".encode() in body


@pytest.mark.parametrize(
    "range_header", ["bytes=abc", "items=0-1", "bytes=99999-", "bytes=10-5", "bytes="]
)
def test_bad_ranges_are_416(
    rclient: TestClient, with_call: int, audio: bytes, range_header: str
) -> None:
    response = rclient.get(signed(), headers={"Range": range_header})
    assert (response.status_code, response.json()) == (
        416,
        {"message": "The requested range is not satisfiable."},
    )
    assert response.headers["content-range"] == f"bytes */{len(audio)}"


def test_head_and_conditional_requests(rclient: TestClient, with_call: int, audio: bytes) -> None:
    head = rclient.head(signed())
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(audio))
    etag, modified = head.headers["etag"], head.headers["last-modified"]
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'W/{etag}, "x"'},
        {"If-Modified-Since": modified},
    ):
        response = rclient.get(signed(), headers=headers)
        assert (response.status_code, response.content) == (304, b""), headers
        assert response.headers["etag"] == etag
    for headers in (
        {"If-None-Match": '"other"'},
        {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
        {"If-Modified-Since": "garbage"},
    ):
        assert rclient.get(signed(), headers=headers).status_code == 200, headers


def test_delete_recording(
    rclient: TestClient,
    tenant: Tenant,
    make_tenant: Callable[..., Tenant],
    with_call: int,
    root: Path,
    db: Engine,
) -> None:
    with db.begin() as conn:
        reader = accounts.create_token(conn, tenant.user_id, "reader", ("calls:read",))
    owner, call_pk = tenant, with_call
    url = f"/api/v1/call-history/{call_pk}/recording"
    assert rclient.delete(url, headers=bearer(reader)).status_code == 403
    assert (root / REC).exists()
    other = make_tenant()
    assert rclient.delete(url, headers=other.headers).json() == {"message": "Call not found."}
    response = rclient.delete(url, headers=owner.headers)
    assert (response.status_code, response.content) == (204, b"")
    assert not (root / REC).exists()
    shown = rclient.get(f"/api/v1/call-history/{call_pk}", headers=owner.headers).json()["data"]
    assert shown["recorded_file_url"] is None
    again = rclient.delete(url, headers=owner.headers)
    assert (again.status_code, again.json()) == (404, {"message": "Recording not found."})
    assert rclient.get(signed()).status_code == 404


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.wav", "audio/wav"),
        ("a.WAV", "audio/wav"),
        ("a.wav49", "audio/wav"),
        ("a.gsm", "audio/gsm"),
        ("a.mp3", "audio/mpeg"),
        ("a.ogg", "audio/ogg"),
        ("a.ulaw", "audio/basic"),
        ("a.bin", "application/octet-stream"),
        ("noext", "application/octet-stream"),
    ],
)
def test_content_types(name: str, expected: str) -> None:
    assert content_type(name) == expected


def test_purge_by_retention(
    tenant: Tenant,
    make_tenant: Callable[..., Tenant],
    add_calls: Callable[..., list[int]],
    base: Path,
    root: Path,
    data_dir: Path,
    rclient: TestClient,
) -> None:
    now = datetime.now().replace(microsecond=0)
    old, recent, gone = "2020/01/01/old.wav", "2020/01/02/recent.wav", "2020/01/03/gone.wav"
    write_wav(root / old)
    write_wav(root / recent)
    a = tenant.account_id
    add_calls(a, [
        new_call(a, 1, started_at=now - timedelta(days=40), recording=old),
        new_call(a, 2, started_at=now - timedelta(days=10), recording=recent),
        new_call(a, 3, started_at=now - timedelta(days=41), recording=gone),
    ])  # fmt: skip
    keeper = make_tenant()  # no retention: its old recording stays
    write_wav(base / str(keeper.account_id) / recent)
    add_calls(
        keeper.account_id,
        [new_call(keeper.account_id, 1, started_at=now - timedelta(days=400), recording=recent)],
    )
    env = {
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "RECORDINGS_DIR": str(base),
    }
    runner = CliRunner()
    result = runner.invoke(
        app, ["accounts", "configure", str(a), "--recording-retention-days", "30"], env=env
    )
    assert result.exit_code == 0 and '"recording_retention_days": 30' in result.output

    dry = runner.invoke(app, ["recordings", "purge", "--dry-run"], env=env)
    assert dry.exit_code == 0
    assert (
        "would delete 1 files (0.0 MB) of 2 expired calls; 1 files were already missing"
        in dry.output
    )
    assert (root / old).exists()

    real = runner.invoke(app, ["recordings", "purge"], env=env)
    assert (
        "deleted 1 files (0.0 MB) of 2 expired calls; 1 files were already missing" in real.output
    )
    assert not (root / old).exists() and (root / recent).exists()
    assert (base / str(keeper.account_id) / recent).exists()
    urls = [
        c["recorded_file_url"] is not None
        for c in rclient.get("/api/v1/call-history", headers=tenant.headers).json()["data"]
    ]
    assert urls == [False, True, False]
    again = runner.invoke(app, ["recordings", "purge"], env=env)
    assert "deleted 0 files (0.0 MB) of 0 expired calls" in again.output
    bad = runner.invoke(
        app, ["accounts", "configure", str(a), "--recording-retention-days", "-1"], env=env
    )
    assert bad.exit_code == 1 and "at least 1 day" in bad.output


def test_storage_locate_refuses_symlinks_out(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write_wav(root / "a/b.wav")
    (root / "a/out.wav").symlink_to(tmp_path / "elsewhere.wav")
    (tmp_path / "elsewhere.wav").write_bytes(b"x")
    (root / "a/in.wav").symlink_to(root / "a/b.wav")
    storage = LocalStorage(root)
    assert storage.locate("a/b.wav") is not None
    assert storage.locate("a/in.wav") is not None  # a link that stays inside is fine
    assert storage.locate("a/out.wav") is None
    assert storage.locate("a") is None  # a directory
    assert storage.delete("a/out.wav") is None and (tmp_path / "elsewhere.wav").exists()
