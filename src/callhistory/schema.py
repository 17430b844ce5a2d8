"""Tables (SQLAlchemy Core) and the engine. Migrations in `migrations/` create exactly these."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("timezone", String(64), nullable=False, server_default="Asia/Tashkent"),
    Column("pbx_config", Text),  # JSON of classify.PbxConfig; NULL = the defaults
    Column("recording_retention_days", Integer),  # NULL = keep recordings forever
    Column("recordings_dir", String(1024)),  # absolute; NULL = RECORDINGS_DIR/<id>
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("email", String(255), nullable=False, unique=True),
    Column("password", String(255), nullable=False),
    Column("type", SmallInteger, nullable=False, server_default="2"),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("disabled_at", DateTime),  # set: no login, and the user's tokens are refused
    Index("ix_users_account_id", "account_id"),
)

#: The extensions a USER (an operator) owns: the calls it sees are those where one of them is the
#: caller or the answering party. An ADMIN has none and sees the whole account.
user_extensions = Table(
    "user_extensions",
    metadata,
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("extension", String(64), primary_key=True),
)

personal_access_tokens = Table(
    "personal_access_tokens",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("token", String(64), nullable=False, unique=True),  # sha256 hex of the secret
    Column("abilities", Text, nullable=False),  # JSON list
    Column("last_used_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    Index("ix_personal_access_tokens_user_id", "user_id"),
)

#: Failed logins, one row each, shared by every server process (the login throttle's memory).
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("key", String(64), nullable=False),  # sha256 hex of the throttle's key
    Column("failed_at", DateTime, nullable=False),
    Index("ix_login_failures_key_failed_at", "key", "failed_at"),
    Index("ix_login_failures_failed_at", "failed_at"),
)

#: What an index that orders calls carries beside its keys, for filters to read (PostgreSQL).
_KINDS = ["type", "status"]

calls = Table(
    "calls",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("call_id", String(36), nullable=False),
    Column("pbx_call_id", String(255)),
    Column("started_at", DateTime, nullable=False),  # naive UTC, like every stored time
    Column("answered_at", DateTime),
    Column("ended_at", DateTime, nullable=False),
    Column("src", String(255), nullable=False),
    Column("dst", String(255), nullable=False),
    Column("external_number", String(255)),
    Column("duration", Integer, nullable=False),
    Column("conversation", Integer, nullable=False),
    Column("type", SmallInteger, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("disposition", String(16), nullable=False),
    Column("legs", Integer, nullable=False, server_default="1"),
    Column("recording", String(1024)),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # One index per query shape of the contract, each led by the account and ended by id,
    # so a filter or a sort (either direction) is an index range scan inside one account.
    Index("uq_calls_account_call_id", "account_id", "call_id", unique=True),
    Index("ix_calls_account_id", "account_id", "id", postgresql_include=_KINDS),
    Index(
        "ix_calls_account_started",
        "account_id",
        "started_at",
        "id",
        # Period edges counted from the index alone, and a period's calls under comparisons of
        # their seconds (0026).
        postgresql_include=[*_KINDS, "duration", "conversation"],
    ),
    # Type and status ride along (INCLUDE): a page inside a window of its sort key, filtered by
    # them, finds its ids from the index alone (`store._placed`).
    Index("ix_calls_account_duration", "account_id", "duration", "id", postgresql_include=_KINDS),
    Index(
        "ix_calls_account_conversation",
        "account_id",
        "conversation",
        "id",
        postgresql_include=_KINDS,
    ),
    Index("ix_calls_account_type", "account_id", "type", "id"),
    Index("ix_calls_account_status", "account_id", "status", "id"),
    Index("ix_calls_account_pbx_call_id", "account_id", "pbx_call_id"),
    Index("ix_calls_account_recording", "account_id", "recording"),
    # Exact numbers in time: new callers, call-backs, an operator's extensions (0012). Type and
    # status ride along, and the dst with the src: an operator's totals are counted from these
    # two indexes alone, its calls as caller plus as answering party less those it was both
    # (`store.counts`; 0023; on SQLite, which has no INCLUDE, as trailing key columns: 0028).
    Index(
        "ix_calls_account_src_started",
        "account_id",
        "src",
        "started_at",
        postgresql_include=["dst", *_KINDS],
    ),
    Index(
        "ix_calls_account_dst_started", "account_id", "dst", "started_at", postgresql_include=_KINDS
    ),
)

# How many calls each account has per (type, status), kept in step with `calls` by the store in the
# same transaction, so the unfiltered total (and type/status-only totals) cost one tiny read instead
# of counting millions of index entries.
call_counts = Table(
    "call_counts",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("type", SmallInteger, primary_key=True),
    Column("status", SmallInteger, primary_key=True),
    Column("calls", BigInteger, nullable=False),
)

#: Seconds per rollup bucket: a quarter of an hour, so that every timezone's hours and days (UTC
#: offsets are whole quarter-hours, daylight saving included) are whole buckets.
BUCKET_SECONDS = 900

# The account's calls per quarter-hour of their start (`bucket` = Unix time // BUCKET_SECONDS) by
# type and status, with their summed durations; kept in step with `calls` by the store in the same
# transaction as `call_counts`. A total over a period (and a statistic per hour or day) sums a few
# hundred of these rows instead of counting millions of calls.
call_rollups = Table(
    "call_rollups",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("bucket", Integer, primary_key=True),
    Column("type", SmallInteger, primary_key=True),
    Column("status", SmallInteger, primary_key=True),
    Column("calls", BigInteger, nullable=False),
    Column("duration", BigInteger, nullable=False),
    Column("conversation", BigInteger, nullable=False),
)

# The account's calls per local day (`day`: `tallies.local_of(bucket, zone, 96)`, in the account's
# timezone) by one number they carry: `side` says which (`tallies.EXTERNAL`: the external number,
# `CALLER`: the src of outgoing and internal calls, `CALLEE`: the dst of incoming and internal
# ones), with type, status and summed durations. Kept like `call_rollups`; rebuilt when the
# account's timezone changes. The statistics per external number and per extension read a month
# of it (a few thousand rows) instead of grouping millions of calls.
number_rollups = Table(
    "number_rollups",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("side", SmallInteger, primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("number", String(255), primary_key=True),
    Column("type", SmallInteger, primary_key=True),
    Column("status", SmallInteger, primary_key=True),
    Column("calls", BigInteger, nullable=False),
    Column("duration", BigInteger, nullable=False),
    Column("conversation", BigInteger, nullable=False),
)

# How many of the account's calls hold each substring of one or two characters (`gram`) in a
# number (`field`: 0 `src`, 1 `dst`, 2 `external_number`), by type and status; only substrings
# without letters (digits, `+`, `*`...), which a search matches exactly (`tallies.grams`). Kept
# like `call_counts`: the total of `filter[src]=10` (a tenth of all calls) is a few rows here
# instead of a scan of every call.
gram_counts = Table(
    "gram_counts",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("field", SmallInteger, primary_key=True),
    Column("gram", String(2), primary_key=True),
    Column("type", SmallInteger, primary_key=True),
    Column("status", SmallInteger, primary_key=True),
    Column("calls", BigInteger, nullable=False),
)

# How many of the account's calls last each number of seconds (`seconds`) in `field` (0
# `duration`, 1 `conversation`), by type and status: a histogram kept like `call_counts`. The
# total of `filter[duration]=>60` sums the rows of the seconds it matches (a few thousand: calls
# last minutes, not years) instead of walking the index entry of every matching call.
length_counts = Table(
    "length_counts",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("field", SmallInteger, primary_key=True),
    Column("seconds", Integer, primary_key=True),
    Column("type", SmallInteger, primary_key=True),
    Column("status", SmallInteger, primary_key=True),
    Column("calls", BigInteger, nullable=False),
)

# How many of the account's calls last each (duration, conversation) pair of seconds, by type and
# status: the joint histogram of the two. A list sorted by one and filtered by the other (talk of
# at most 71 s, longest first: the longest calls talked longer) is read inside the seconds of its
# sort key that hold its page, instead of walking every call that sorts before it; its total is
# summed from here. Tens of thousands of rows an account: the wait before an answer is short.
length_pairs = Table(
    "length_pairs",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("duration", Integer, primary_key=True),
    Column("conversation", Integer, primary_key=True),
    Column("type", SmallInteger, primary_key=True),
    Column("status", SmallInteger, primary_key=True),
    Column("calls", BigInteger, nullable=False),
)

# How many of the account's calls have an id in each block of `tallies.ID_BLOCK` ids (`block`:
# id // ID_BLOCK), by type and status: a histogram kept like `call_counts`. A deep page of a list
# in id order (the default) is read inside the blocks it places the page in, instead of walking
# the index entries of every call before it (millions, in the middle of a big account's list).
id_counts = Table(
    "id_counts",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("block", BigInteger, primary_key=True),
    Column("type", SmallInteger, primary_key=True),
    Column("status", SmallInteger, primary_key=True),
    Column("calls", BigInteger, nullable=False),
)

# The earliest and latest start of the account's calls in each block of `tallies.SPAN_BLOCK` ids
# (`block`: id // SPAN_BLOCK). Kept by the store in the same transaction as the calls, widened by
# every call stored and never narrowed by one removed or moved (`stats rebuild` narrows them):
# they hold every call of the block, perhaps more. A list in id order filtered by a period is read
# between the lowest and highest blocks that may hold the period's calls, instead of walking the
# index entries of every call before them (a PBX stores calls as they end: ids follow time).
id_spans = Table(
    "id_spans",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("block", BigInteger, primary_key=True),
    Column("first_at", DateTime, nullable=False),
    Column("last_at", DateTime, nullable=False),
)

# The account's calls per local hour of their start (`hour`: `tallies.local_of(bucket, zone, 4)`,
# in the account's timezone) by type and status: `call_rollups` summed by local hour. The
# statistics per hour, the heatmap and the summary's busiest hour read a month of it (a quarter of
# the quarter-hours). Kept like `call_rollups`; rebuilt when the account's timezone changes.
hour_rollups = Table(
    "hour_rollups",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("hour", Integer, primary_key=True),
    Column("type", SmallInteger, primary_key=True),
    Column("status", SmallInteger, primary_key=True),
    Column("calls", BigInteger, nullable=False),
)

# The account's calls per local day (as `number_rollups`), type and wait before the answer in
# whole seconds (`answered` 1; a call not answered has `answered` 0 and `wait` 0), with summed
# talk: the summary's answer rate, waits, service level and talk time over whole days.
wait_rollups = Table(
    "wait_rollups",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("type", SmallInteger, primary_key=True),
    Column("answered", SmallInteger, primary_key=True),
    Column("wait", Integer, primary_key=True),
    Column("calls", BigInteger, nullable=False),
    Column("conversation", BigInteger, nullable=False),
)

# When each outside number first called the account (its earliest incoming call), kept by the
# store with the calls: the summary's new callers in a period are those whose first call is in it.
callers = Table(
    "callers",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("number", String(255), primary_key=True),
    Column("first_at", DateTime, nullable=False),
    Index("ix_callers_account_first_at", "account_id", "first_at"),
)

# How many outside numbers called on each local day (`day`) whose previous day of calls was
# `since` (`tallies.NEVER`: none before). The numbers that called on the whole days a..b are the
# rows of those days with `since` < a (each number counted once, on its first day there), the new
# callers among them those with `since` NEVER: the summary's unique and new callers over a month
# from a few thousand rows, not a million numbers sorted.
caller_gaps = Table(
    "caller_gaps",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("since", Integer, primary_key=True),
    Column("callers", BigInteger, nullable=False),
)

# Each missed call from an outside number (incoming, not answered), in its caller's story: the
# start of the number's next missed call (`next_at`, NULL for its last) and the fewest whole hours
# after it that the number was first reached (`waited`: called back or got through;
# `unreturned.NOT_REACHED` if never within the longest `within`). Kept with the calls
# (`unreturned`): a period's missed-unreturned list is its missed calls whose next miss is after
# it and that waited longer than `within`, latest first.
missed_calls = Table(
    "missed_calls",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("id", BigId, primary_key=True),  # the call's
    Column("number", String(255), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("next_at", DateTime),
    Column("waited", Integer, nullable=False),
    Index("ix_missed_calls_account_number", "account_id", "number"),
    Index("ix_missed_calls_account_started_at", "account_id", "started_at"),
)

# `missed_calls` counted by local day (`day`, as `number_rollups`'), the local day of the next
# miss (`next_day`; `unreturned.NEVER_AGAIN` for a number's last) and `waited`: the total of a
# period of whole days is the rows of its days whose next miss is after its last day and that
# waited longer than `within`.
missed_rollups = Table(
    "missed_rollups",
    metadata,
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("next_day", Integer, primary_key=True),
    Column("waited", Integer, primary_key=True),
    Column("calls", BigInteger, nullable=False),
)

# The raw CDR legs behind a PBX call, so a leg arriving later re-merges its call exactly and a
# re-import recognises every leg it has already seen (leg_key). Its account is its call's (no
# foreign key of its own: one check per stored leg, for what the call's key already ensures).
# A leg's key is a hash of its fields, its call's key among them, so it is unique on its own; it
# is made unique under its call's key, which Asterisk makes of the call's start (linkedid, as
# "1767236400.123"): new legs go to the index's last pages instead of random ones, and the same
# index finds a call's legs (migration 0030).
call_legs = Table(
    "call_legs",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", BigId, nullable=False),
    Column("call_history_id", BigId, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    Column("call_key", String(255), nullable=False),  # linkedid, else uniqueid
    Column("leg_key", String(64), nullable=False),
    Column("accountcode", String(255), nullable=False),
    Column("src", String(255), nullable=False),
    Column("dst", String(255), nullable=False),
    Column("dcontext", String(255), nullable=False),
    Column("clid", String(255), nullable=False),
    Column("channel", String(255), nullable=False),
    Column("dstchannel", String(255), nullable=False),
    Column("lastapp", String(255), nullable=False),
    Column("lastdata", Text, nullable=False),
    Column("start", DateTime, nullable=False),
    Column("answer", DateTime),
    Column("end", DateTime, nullable=False),
    Column("duration", Integer, nullable=False),
    Column("billsec", Integer, nullable=False),
    Column("disposition", String(16), nullable=False),
    Column("amaflags", String(32), nullable=False),
    Column("uniqueid", String(255)),
    Column("userfield", Text),
    Column("peeraccount", String(255)),
    Column("linkedid", String(255)),
    Column("sequence", Integer),
    Index("uq_call_legs_account_call_leg", "account_id", "call_key", "leg_key", unique=True),
    Index("ix_call_legs_call", "call_history_id"),
)

# How far each imported file was read, so a re-import of a grown Master.csv starts where it left.
import_files = Table(
    "import_files",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("head", String(64), nullable=False),  # sha256 of the first line: same file or rotated?
    Column("offset", BigInteger, nullable=False),
    Column("lines", BigInteger, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("uq_import_files_account_path", "account_id", "path", unique=True),
)

call_integrations = Table(
    "call_integrations",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("call_history_id", BigId, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    Column("integration_type", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("error_message", Text),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # The sync queue: which integration, how often tried, when next, and who holds it now.
    Column("integration_id", BigId, ForeignKey("integrations.id", ondelete="CASCADE")),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime),
    Column("lease_owner", String(64)),
    Column("lease_until", DateTime),
    Column("external_id", String(64)),  # the CRM's id of the pushed call
    # The call's account: the sync rows are sharded with their calls on Citus (0013).
    Column("account_id", BigId, nullable=False),
    Index("ix_call_integrations_call", "call_history_id", "id"),
    Index("ix_call_integrations_queue", "status", "integration_id", "next_attempt_at", "id"),
    Index("ix_call_integrations_status_call", "status", "call_history_id"),
)

# A CRM an account pushes its calls to. Secrets are encrypted with the app key.
integrations = Table(
    "integrations",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("integration_type", String(32), nullable=False),
    Column("base_url", String(255), nullable=False),
    Column("auth", String(16), nullable=False),  # long_lived | oauth
    Column("secrets", Text, nullable=False),  # Fernet token of a JSON object
    Column("access_expires_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("uq_integrations_account_type", "account_id", "integration_type", unique=True),
)


def dialect_insert(conn: Connection, table: Table) -> Any:
    """INSERT with the dialect's ON CONFLICT support (PostgreSQL and SQLite share the syntax)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _create_private(url: str) -> None:
    """A new SQLite file readable by its owner only: it holds password and token hashes and
    sealed CRM secrets. SQLite gives its -wal and -shm files the database file's mode."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # another process made it first
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _create_private(url)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Our filters' best plans depend on their values (a 2-digit substring vs. a whole number, a
    # day vs. a year): a statement psycopg prepared on its own after 5 runs would let PostgreSQL
    # switch to one generic plan (measured: a count at 78 ms became 380 ms). So psycopg prepares
    # nothing on its own (a threshold never reached) and each run is planned for its values;
    # only `prepared.Prepared` statements are prepared, and they say why they may be.
    engine = create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        connect_args={"prepare_threshold": NEVER},
    )
    _ping_when_idle(engine)
    return engine


def url_of(engine: Engine) -> str:
    """The URL `make_engine` takes to reach the same database (from another process)."""
    return engine.url.render_as_string(hide_password=False)


#: psycopg's `prepare_threshold` (runs before it prepares a statement by itself) that is never
#: reached; None would also refuse `prepare=True`.
NEVER = 1 << 62

#: A pooled connection unused for this long is pinged before it serves again.
PING_AFTER_IDLE_SECONDS = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling for connections that sat in the pool (where a restarted
    server or a firewall drops them unseen), without pool_pre_ping's round trip on every checkout
    of a busy pool. A connection dropped while in use fails its request (a 503 to retry); the
    pool then replaces every connection it held (SQLAlchemy invalidates them together)."""

    @event.listens_for(engine, "checkin")
    def _idle(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the driver's own error for a dead connection
            raise DisconnectionError("a pooled connection was dropped") from exc
