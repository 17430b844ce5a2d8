"""Accounts (companies), users and Sanctum-format personal access tokens: their SQL and secrets."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.exc import OperationalError

from callhistory import citus, tallies
from callhistory.classify import PbxConfig
from callhistory.models import ABILITIES, ADMIN_ABILITIES, DEFAULT_TIMEZONE, UserType
from callhistory.prepared import Prepared
from callhistory.schema import (
    accounts,
    login_failures,
    personal_access_tokens,
    user_extensions,
    users,
)
from callhistory.store import AnyRow, Scope, utcnow

# OWASP's argon2id minimum (m=19 MiB, t=2, p=1): sound, and cheap enough that a few hashes at once
# never threaten the server's memory. Hashes made with other parameters still verify and are
# re-hashed with these at the next successful login.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_TOKEN_ALPHABET = string.ascii_letters + string.digits
# Verified against when the email is unknown, so a miss costs as much as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))

log = logging.getLogger("callhistory")


class AccountError(ValueError):
    """Bad input to an admin operation (unknown timezone, duplicate email...)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the token, its user, the user's role and account. A USER's
    `extensions` are the only calls it sees (None for an ADMIN: the whole account)."""

    token_id: int
    abilities: tuple[str, ...]
    user_id: int
    account_id: int
    timezone: ZoneInfo
    role: UserType = UserType.ADMIN
    extensions: frozenset[str] | None = None
    last_used_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is UserType.ADMIN

    @property
    def scope(self) -> Scope:
        return Scope(self.account_id, None if self.is_admin else (self.extensions or frozenset()))

    def can(self, ability: str) -> bool:
        """The token grants the ability, and the role allows it (a USER only reads)."""
        if ability in ADMIN_ABILITIES and not self.is_admin:
            return False
        return "*" in self.abilities or ability in self.abilities


def check_timezone(name: str) -> ZoneInfo:
    if name not in available_timezones():
        raise AccountError(f"Unknown timezone {name!r}; use an IANA name such as Asia/Tashkent.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:  # pragma: no cover - tzdata is a dependency
        raise AccountError(f"Unknown timezone {name!r}.") from exc


def create_account(
    conn: Connection,
    name: str,
    timezone: str = DEFAULT_TIMEZONE,
    *,
    recordings_base: Path | None = None,
    recordings_dir: Path | None = None,
) -> int:
    """Create an account. With `recordings_base` (RECORDINGS_DIR), its recordings root is checked
    not to overlap another account's (see `set_recordings_dir`)."""
    check_timezone(timezone)
    if not name.strip():
        raise AccountError("The account name must not be empty.")
    now = utcnow()
    stmt = accounts.insert().values(
        name=name.strip(), timezone=timezone, created_at=now, updated_at=now
    )
    account_id = int(conn.execute(stmt.returning(accounts.c.id)).scalar_one())
    if recordings_base is not None:
        set_recordings_dir(conn, recordings_base, account_id, recordings_dir)
    return account_id


def _root(base: Path, account_id: int, configured: str | None) -> Path:
    return Path(configured) if configured else base.resolve() / str(account_id)


def _roots(conn: Connection, base: Path) -> dict[int, Path]:
    """Every account's recordings root, resolved."""
    rows = conn.execute(select(accounts.c.id, accounts.c.recordings_dir))
    return {int(r.id): _root(base, int(r.id), r.recordings_dir).resolve() for r in rows}


def recordings_root(conn: Connection, base: Path, account_id: int) -> Path:
    """The account's recordings root: its own directory, else RECORDINGS_DIR/<account id>."""
    configured = conn.execute(
        select(accounts.c.recordings_dir).where(accounts.c.id == account_id)
    ).scalar_one_or_none()
    return _root(base, account_id, configured)


def _nested(a: Path, b: Path) -> bool:
    """One directory strictly inside the other (equal roots are a deliberate share)."""
    return a != b and (a.is_relative_to(b) or b.is_relative_to(a))


def set_recordings_dir(
    conn: Connection, base: Path, account_id: int, directory: Path | None
) -> None:
    """Give the account its own recordings root (None: RECORDINGS_DIR/<id>).

    A root may equal another account's (two accounts deliberately sharing one PBX's files) but
    never lie inside or around another's: then one account's relative paths would reach into the
    other's files.
    """
    if directory is not None:
        directory = directory.expanduser().resolve()
    base = base.resolve()
    mine = directory or _root(base, account_id, None)
    if directory is not None and mine != base / str(account_id):
        if mine.is_relative_to(base) and mine != base:
            raise AccountError(
                f"The recordings directory {mine} lies inside RECORDINGS_DIR ({base}), where "
                f"each account's default is RECORDINGS_DIR/<account id>; choose another."
            )
        if base.is_relative_to(mine) and mine != base:
            raise AccountError(
                f"The recordings directory {mine} contains RECORDINGS_DIR ({base}), where "
                "other accounts' recordings go; choose another."
            )
    for other, root in sorted(_roots(conn, base).items()):
        if other != account_id and _nested(mine, root):
            raise AccountError(
                f"The recordings directory {mine} overlaps account {other}'s ({root}); "
                "give each account a directory of its own."
            )
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(recordings_dir=str(directory) if directory else None, updated_at=utcnow())
    )


def accounts_sharing_root(conn: Connection, base: Path, account_id: int) -> list[int]:
    """Other accounts whose recordings root is the same directory as this account's."""
    roots = _roots(conn, base)
    mine = roots.get(account_id)
    return [other for other, root in roots.items() if other != account_id and root == mine]


def account_exists(conn: Connection, account_id: int) -> bool:
    return (
        conn.execute(select(accounts.c.id).where(accounts.c.id == account_id)).first() is not None
    )


def account_timezone(conn: Connection, account_id: int) -> ZoneInfo:
    name = conn.execute(select(accounts.c.timezone).where(accounts.c.id == account_id)).scalar_one()
    return ZoneInfo(name)


def pbx_settings(conn: Connection, account_id: int) -> tuple[PbxConfig, ZoneInfo]:
    """The account's PBX layout and timezone; AccountError when there is no such account."""
    row = conn.execute(
        select(accounts.c.pbx_config, accounts.c.timezone).where(accounts.c.id == account_id)
    ).first()
    if row is None:
        raise AccountError(f"No account with id {account_id}.")
    return PbxConfig.from_json(row.pbx_config), ZoneInfo(row.timezone)


def set_pbx_config(conn: Connection, account_id: int, config: PbxConfig) -> None:
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(pbx_config=config.to_json(), updated_at=utcnow())
    )


def set_timezone(conn: Connection, account_id: int, timezone: str) -> None:
    """Change the account's timezone: shown times and the day filters follow it; calls already
    stored keep their instants (CDRs are stored in UTC), and their rollups by local hour and day are
    recounted in the new zone (after every ingest that read the old one has committed)."""
    zone = check_timezone(timezone)
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(timezone=timezone, updated_at=utcnow())
    )
    tallies.rebuild_local(conn, account_id, zone)


def set_recording_retention(conn: Connection, account_id: int, days: int | None) -> None:
    """Keep the account's recordings `days` days (None: forever)."""
    if days is not None and days < 1:
        raise AccountError("The retention must be at least 1 day (or 0 to keep recordings).")
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(recording_retention_days=days, updated_at=utcnow())
    )


def retention_policies(conn: Connection, account_id: int | None = None) -> list[tuple[int, int]]:
    """(account id, days) of the accounts that expire their recordings."""
    stmt = select(accounts.c.id, accounts.c.recording_retention_days).where(
        accounts.c.recording_retention_days.is_not(None)
    )
    if account_id is not None:
        stmt = stmt.where(accounts.c.id == account_id)
    return [
        (int(r.id), int(r.recording_retention_days))
        for r in conn.execute(stmt.order_by(accounts.c.id))
    ]


def describe_account(conn: Connection, account_id: int) -> dict[str, object]:
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    if row is None:
        raise AccountError(f"No account with id {account_id}.")
    config = PbxConfig.from_json(row.pbx_config)
    return {
        "id": row.id,
        "name": row.name,
        "timezone": row.timezone,
        "trunks": list(config.trunks),
        "inbound_contexts": list(config.inbound_contexts),
        "dids": list(config.dids),
        "extensions": config.extensions,
        "outside_numbers": config.outside_numbers,
        "recording_retention_days": row.recording_retention_days,
        "recordings_dir": row.recordings_dir,
        "created_at": row.created_at.isoformat(),
    }


def find_account_by_name(conn: Connection, name: str) -> int | None:
    row = conn.execute(
        select(accounts.c.id).where(accounts.c.name == name).order_by(accounts.c.id)
    ).first()
    return None if row is None else int(row.id)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


#: An email address, as the API checks one (the database's unique index does the rest).
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")

#: What an extension may look like: a dial string's digits, or a name some PBXs use (`SIP-101`).
_EXTENSION = re.compile(r"[0-9A-Za-z*#+_.-]{1,64}")


def parse_role(text: str) -> UserType:
    """`admin` or `user` (any case, or the original's numbers 1 and 2)."""
    for role in UserType:
        if text.strip().lower() in (role.name.lower(), str(int(role))):
            return role
    raise AccountError(f"Unknown role {text!r}; use admin or user.")


def check_role(role: UserType, extensions: Sequence[str]) -> tuple[str, ...]:
    """The extensions, checked against the role: a USER needs at least one (they are all it
    sees), an ADMIN has none (it sees the whole account)."""
    found = tuple(dict.fromkeys(e.strip() for e in extensions))
    for extension in found:
        if _EXTENSION.fullmatch(extension) is None:
            raise AccountError(
                f"{extension!r} is not an extension (1-64 of 0-9 A-Z a-z * # + _ . -)."
            )
    if role is UserType.USER and not found:
        raise AccountError("A user with role user needs at least one extension.")
    if role is UserType.ADMIN and found:
        raise AccountError("An admin sees the whole account; extensions are for role user.")
    return found


def create_user(
    conn: Connection,
    account_id: int,
    email: str,
    name: str,
    password: str,
    *,
    role: UserType = UserType.ADMIN,
    extensions: Sequence[str] = (),
    password_hash: str | None = None,
) -> int:
    email = email.strip().lower()
    if "@" not in email:
        raise AccountError(f"{email!r} is not an email address.")
    if not account_exists(conn, account_id):
        raise AccountError(f"No account with id {account_id}.")
    if find_user(conn, email) is not None:
        raise AccountError(f"A user with email {email} already exists.")
    owned = check_role(role, extensions)
    now = utcnow()
    stmt = users.insert().values(
        account_id=account_id,
        email=email,
        name=name,
        password=password_hash or hash_password(password),
        type=int(role),
        created_at=now,
        updated_at=now,
    )
    user_id = int(conn.execute(stmt.returning(users.c.id)).scalar_one())
    _set_extensions(conn, user_id, owned)
    return user_id


def _set_extensions(conn: Connection, user_id: int, extensions: Sequence[str]) -> None:
    conn.execute(delete(user_extensions).where(user_extensions.c.user_id == user_id))
    if extensions:
        conn.execute(
            user_extensions.insert(), [{"user_id": user_id, "extension": e} for e in extensions]
        )


def set_role(conn: Connection, user_id: int, role: UserType, extensions: Sequence[str]) -> None:
    """Give a user a role and (for USER) the extensions it owns, replacing the ones it had."""
    owned = check_role(role, extensions)
    conn.execute(
        update(users).where(users.c.id == user_id).values(type=int(role), updated_at=utcnow())
    )
    _set_extensions(conn, user_id, owned)


def extensions_of(conn: Connection, user_ids: Iterable[int]) -> dict[int, list[str]]:
    """Each user's extensions, sorted (an empty list for an ADMIN)."""
    found: dict[int, list[str]] = {user_id: [] for user_id in user_ids}
    if found:
        stmt = (
            select(user_extensions.c.user_id, user_extensions.c.extension)
            .where(user_extensions.c.user_id.in_(list(found)))
            .order_by(user_extensions.c.user_id, user_extensions.c.extension)
        )
        for user_id, extension in conn.execute(stmt):
            found[user_id].append(extension)
    return found


def find_user(conn: Connection, email: str) -> AnyRow | None:
    return conn.execute(select(users).where(users.c.email == email.strip().lower())).first()


def get_user(conn: Connection, user_id: int) -> AnyRow:
    return conn.execute(select(users).where(users.c.id == user_id)).one()


def authenticate(conn: Connection, email: str, password: str) -> int | None:
    """The user id when the credentials match, else None (in constant-ish time)."""
    user = find_user(conn, email)
    stored = user.password if user else _DUMMY_HASH
    if not verify_password(stored, password) or user is None or user.disabled_at is not None:
        return None
    if _hasher.check_needs_rehash(stored):
        set_password(conn, int(user.id), password)
    return int(user.id)


def reset_password(conn: Connection, email: str, password: str, revoke_tokens: bool) -> int:
    """Give the user a new password (and, if asked, revoke every token they hold); returns how
    many tokens were revoked. AccountError for an unknown email or an empty password."""
    user = find_user(conn, email.strip().lower())
    if user is None:
        raise AccountError(f"No user with email {email}.")
    if not password:
        raise AccountError("The password must not be empty.")
    set_password(conn, int(user.id), password)
    if not revoke_tokens:
        return 0
    stmt = delete(personal_access_tokens).where(personal_access_tokens.c.user_id == user.id)
    return int(conn.execute(stmt).rowcount)


def set_disabled(conn: Connection, email: str, disabled: bool) -> bool:
    """Disable (no login, tokens refused) or enable a user; False when it already was.
    AccountError for an unknown email."""
    user = find_user(conn, email.strip().lower())
    if user is None:
        raise AccountError(f"No user with email {email}.")
    if (user.disabled_at is not None) == disabled:
        return False
    now = utcnow()
    conn.execute(
        update(users)
        .where(users.c.id == user.id)
        .values(disabled_at=now if disabled else None, updated_at=now)
    )
    return True


def set_password(conn: Connection, user_id: int, password: str) -> None:
    conn.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(password=hash_password(password), updated_at=utcnow())
    )


def parse_abilities(text: str) -> tuple[str, ...]:
    """`calls:read,calls:write` → a checked tuple; `*` grants every ability."""
    items = tuple(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))
    unknown = [a for a in items if a != "*" and a not in ABILITIES]
    if unknown or not items:
        raise AccountError(
            f"Unknown abilities {', '.join(unknown) or '(none)'}; "
            f"choose from *, {', '.join(ABILITIES)}."
        )
    return items


def _token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token_secret() -> str:
    """Sanctum's secret: 40 random characters, then their crc32b as 8 hex digits."""
    entropy = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(40))
    return f"{entropy}{zlib.crc32(entropy.encode()) & 0xFFFFFFFF:08x}"


def create_token(
    conn: Connection, user_id: int, name: str = "api", abilities: tuple[str, ...] = ("*",)
) -> str:
    """Create a token and return its plaintext `id|secret`; only the secret's sha256 is kept."""
    secret = new_token_secret()
    stmt = personal_access_tokens.insert().values(
        user_id=user_id,
        name=name,
        token=_token_hash(secret),
        abilities=json.dumps(list(abilities)),
        created_at=utcnow(),
    )
    token_id = conn.execute(stmt.returning(personal_access_tokens.c.id)).scalar_one()
    return f"{token_id}|{secret}"


#: A token with its user and account; a disabled user's tokens are refused. Built once: every
#: request runs it (a statement built per call costs more than its round trip).
_PRINCIPAL = (
    select(
        personal_access_tokens.c.id,
        personal_access_tokens.c.token,
        personal_access_tokens.c.abilities,
        personal_access_tokens.c.last_used_at,
        users.c.id.label("user_id"),
        users.c.account_id,
        users.c.type,
        accounts.c.timezone,
    )
    .select_from(personal_access_tokens.join(users).join(accounts))
    .where(users.c.disabled_at.is_(None))
)
_PRINCIPAL_BY_ID = Prepared(_PRINCIPAL.where(personal_access_tokens.c.id == bindparam("token_id")))
_PRINCIPAL_BY_HASH = Prepared(_PRINCIPAL.where(personal_access_tokens.c.token == bindparam("hash")))


def find_principal(conn: Connection, plaintext: str) -> Principal | None:
    """Sanctum's lookup: by id when the token has one, then a constant-time hash comparison."""
    token_id_text, bar, secret = plaintext.partition("|")
    if bar:
        if not token_id_text.isdigit() or len(token_id_text) > 18:
            return None
        row = _PRINCIPAL_BY_ID.first(conn, {"token_id": int(token_id_text)})
    else:
        secret = plaintext
        row = _PRINCIPAL_BY_HASH.first(conn, {"hash": _token_hash(secret)})
    if row is None or not hmac.compare_digest(row.token, _token_hash(secret)):
        return None
    role = UserType.ADMIN if row.type == UserType.ADMIN else UserType.USER
    owned = None
    if role is UserType.USER:  # one more query, for operators only
        owned = frozenset(extensions_of(conn, [int(row.user_id)])[int(row.user_id)])
    return Principal(
        token_id=int(row.id),
        abilities=tuple(json.loads(row.abilities)),
        user_id=int(row.user_id),
        account_id=int(row.account_id),
        timezone=ZoneInfo(row.timezone),
        role=role,
        extensions=owned,
        last_used_at=row.last_used_at,
    )


def touch_token(conn: Connection, principal: Principal) -> None:
    """Record use, at most once a minute per token, so reads rarely write: no statement at all
    when the token was already used this minute (as read with it)."""
    now = utcnow()
    if principal.last_used_at is not None and principal.last_used_at >= now.replace(second=0):
        return
    token_id = principal.token_id
    stmt = (
        update(personal_access_tokens)
        .where(personal_access_tokens.c.id == token_id)
        .where(
            (personal_access_tokens.c.last_used_at.is_(None))
            | (personal_access_tokens.c.last_used_at < now.replace(second=0))
        )
        .values(last_used_at=now)
    )
    if not citus.sharded(conn):
        conn.execute(stmt)
        return
    # On Citus the tokens are a reference table, written on every node: while one worker is
    # down the write fails. Use of a token is bookkeeping; the request goes on without it.
    try:
        with conn.begin_nested():
            conn.execute(stmt)
    except OperationalError as exc:
        log.warning("token use not recorded: %s", (str(exc.orig).splitlines() or [""])[0])


def revoke_token(conn: Connection, token_id: int) -> bool:
    """Delete a token; False when there was none with that id."""
    stmt = delete(personal_access_tokens).where(personal_access_tokens.c.id == token_id)
    return bool(conn.execute(stmt).rowcount)


def list_accounts(conn: Connection) -> list[AnyRow]:
    """Every account with how many users it has, by id."""
    users_count = (
        select(func.count())
        .where(users.c.account_id == accounts.c.id)
        .correlate(accounts)
        .scalar_subquery()
    )
    stmt = select(accounts.c.id, accounts.c.name, accounts.c.timezone, users_count.label("users"))
    return list(conn.execute(stmt.order_by(accounts.c.id)))


def list_users(conn: Connection, account_id: int) -> list[AnyRow]:
    """The account's users by id (never their password hash)."""
    if not account_exists(conn, account_id):
        raise AccountError(f"No account with id {account_id}.")
    stmt = select(
        users.c.id, users.c.email, users.c.name, users.c.type, users.c.created_at,
        users.c.disabled_at,
    )  # fmt: skip
    return list(conn.execute(stmt.where(users.c.account_id == account_id).order_by(users.c.id)))


def list_tokens(conn: Connection, user_id: int) -> list[AnyRow]:
    """The user's tokens by id: name, abilities, last use; never the secret or its hash."""
    return list(conn.execute(_tokens().where(personal_access_tokens.c.user_id == user_id)))


def _tokens() -> Any:
    t = personal_access_tokens
    return select(
        t.c.id, t.c.user_id, t.c.name, t.c.abilities, t.c.last_used_at, t.c.created_at
    ).order_by(t.c.id)


def account_tokens(
    conn: Connection, account_id: int, user_id: int | None = None, token_id: int | None = None
) -> list[AnyRow]:
    """The tokens of the account's users (of one of them, given `user_id`; the one with
    `token_id`, given that), by id."""
    stmt = _tokens().join(users).where(users.c.account_id == account_id)
    if user_id is not None:
        stmt = stmt.where(users.c.id == user_id)
    if token_id is not None:
        stmt = stmt.where(personal_access_tokens.c.id == token_id)
    return list(conn.execute(stmt))


def account_user(conn: Connection, account_id: int, user_id: int) -> AnyRow | None:
    """The account's user with this id (None for another account's)."""
    stmt = select(users).where(users.c.account_id == account_id, users.c.id == user_id)
    return conn.execute(stmt).first()


def revoke_tokens_named(conn: Connection, user_id: int, name: str) -> None:
    conn.execute(
        delete(personal_access_tokens).where(
            personal_access_tokens.c.user_id == user_id, personal_access_tokens.c.name == name
        )
    )


def revoke_other_tokens(conn: Connection, user_id: int, keep_token_id: int) -> None:
    conn.execute(
        delete(personal_access_tokens).where(
            personal_access_tokens.c.user_id == user_id,
            personal_access_tokens.c.id != keep_token_id,
        )
    )


def login_failures_since(conn: Connection, key: str, since: datetime, limit: int) -> list[datetime]:
    """The newest `limit` failed logins of a throttle key after `since`, newest first."""
    stmt = (
        select(login_failures.c.failed_at)
        .where(login_failures.c.key == key, login_failures.c.failed_at > since)
        .order_by(login_failures.c.failed_at.desc())
        .limit(limit)
    )
    return list(conn.execute(stmt).scalars())


def record_login_failure(conn: Connection, key: str, at: datetime, forget_before: datetime) -> None:
    """Count a failed login; now and then forget every failure older than the window (random
    emails must not grow the table forever)."""
    conn.execute(login_failures.insert().values(key=key, failed_at=at))
    if secrets.randbelow(32) == 0:
        conn.execute(delete(login_failures).where(login_failures.c.failed_at < forget_before))


def clear_login_failures(conn: Connection, key: str) -> None:
    conn.execute(delete(login_failures).where(login_failures.c.key == key))
