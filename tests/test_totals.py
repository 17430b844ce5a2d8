"""Every way of counting and paging gives what a plain `count(*)` and `ORDER BY … LIMIT/OFFSET`
give on the same random data: the counters, the quarter-hour rollups with their partial edges, the
plain count, and deep pages read backwards. Both databases; calls re-merged in between."""

from __future__ import annotations

import csv
import dataclasses
import io
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import DateTime, Engine, bindparam, event, select, text
from typer.testing import CliRunner

from callhistory import accounts, citus, migrate, store, tallies
from callhistory.cli import app
from callhistory.models import CallStatus, CallType, NewCall, UserType
from callhistory.schema import accounts as accounts_table
from callhistory.schema import callers, calls, make_engine
from tests.conftest import Tenant, new_call
from tests.test_roles import web_session

URL = "/api/v1/call-history"
DAY0 = datetime(2026, 3, 1)  # naive UTC

#: The contract's sorts and the plain SQL order each stands for.
SORTS = {
    "": "id",
    "-id": "id DESC",
    "datetime": "started_at, id",
    "-datetime": "started_at DESC, id DESC",
    "duration,-conversation": "duration, conversation DESC, id DESC",
    "-duration": "duration DESC, id DESC",
}
TYPES = {"1": CallType.INCOMING, "2": CallType.OUTGOING, "3": CallType.INTERNAL}


def random_call(rng: random.Random, account_id: int, n: int) -> NewCall:
    # Seconds around quarter-hour boundaries are the interesting ones: half the calls sit there.
    if rng.random() < 0.5:
        offset = rng.randrange(0, 4 * 24 * 4) * 900 + rng.choice([-2, -1, 0, 1, 2])
    else:
        offset = rng.randrange(0, 4 * 86400)
    conversation = rng.choice([0, 0, 5, 30, 200])
    return new_call(
        account_id,
        n,
        started_at=DAY0 + timedelta(seconds=max(offset, 0)),
        duration=conversation + rng.randrange(0, 40),
        conversation=conversation,
        type=rng.choice(list(TYPES.values())),
        src=rng.choice(["100", "101", "998901112233"]),
        dst=rng.choice(["102", "998907654321", ""]),
        external_number=rng.choice(["781130590", "712005060", None, ""]),
    )


def kinds(
    rng: random.Random, params: dict[str, str], where: list[str], *, types: bool, status: bool
) -> None:
    """Random type and status filters (when asked), as the API takes them and as plain SQL."""
    if types:
        chosen = rng.sample(sorted(TYPES), rng.randint(1, 2))
        params["filter[type]"] = ",".join(chosen)
        where.append(f"type IN ({', '.join(str(int(TYPES[t])) for t in chosen)})")
    if status:
        params["filter[status]"] = value = rng.choice(["1", "2"])
        where.append(f"status = {value}")


def expected_ids(
    db: Engine, account_id: int, where: list[str], args: dict[str, Any], order: str
) -> list[int]:
    conditions = " AND ".join(["account_id = :account", *where])
    sql = f"SELECT id FROM calls WHERE {conditions} ORDER BY {order}"
    # Typed binds: SQLite stores times as text, and compares them as text.
    stmt = text(sql).bindparams(*(bindparam(name, type_=DateTime) for name in args))
    with db.connect() as conn:
        return [row.id for row in conn.execute(stmt, {"account": account_id, **args})]


def local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def assert_pages(
    client: TestClient,
    headers: dict[str, str],
    params: dict[str, str],
    truth: list[int],
    pages: set[int],
) -> None:
    """Each of the list's `pages`: the total and the ids plain SQL gives (`truth`, in order)."""
    per = int(params["per_page"])
    for page in sorted(pages - {0}):
        response = client.get(URL, params={**params, "page": str(page)}, headers=headers)
        assert response.status_code == 200, (params, response.text)
        body = response.json()
        found = (body["meta"]["total"], [c["id"] for c in body["data"]])
        assert found == (len(truth), truth[(page - 1) * per : page * per]), (params, page)


@pytest.fixture
def randomized(
    db: Engine,
    make_tenant: Callable[..., Tenant],
    add_calls: Callable[..., list[int]],
) -> tuple[Tenant, ZoneInfo]:
    rng = random.Random(20261127)
    tenant = make_tenant(timezone="Asia/Kolkata")  # UTC+5:30: local hours straddle UTC ones
    other = make_tenant()
    add_calls(other.account_id, [random_call(rng, other.account_id, n) for n in range(150)])
    mine = [random_call(rng, tenant.account_id, n) for n in range(600)]
    # Several big batches in one transaction, as `demo` stores its calls: each batch's tallies
    # must count once (PostgreSQL stages them in a table that lives until the commit).
    with db.begin() as conn:
        for start in range(0, 600, 200):
            store.insert_calls(conn, tenant.account_id, mine[start : start + 200])
    # Re-merged calls move between quarter-hours, types and statuses, as a late leg makes them;
    # the second batch moves some of the first one's calls again.
    with db.begin() as conn:
        for start in (0, 60):
            ids = [c.call_id for c in mine[start : start + 120]]
            stored = store.get_many_by_call_id(conn, tenant.account_id, ids)
            again = [random_call(rng, tenant.account_id, n) for n in range(start, start + 120)]
            store.update_calls(conn, tenant.account_id, [(stored[c.call_id], c) for c in again])
    return tenant, ZoneInfo("Asia/Kolkata")


def tallies_of(db: Engine) -> tuple[list[tuple[Any, ...]], ...]:
    """The rollups and counters that hold calls (a row moved to zero may stay behind)."""
    rollups = (
        "SELECT account_id, bucket, type, status, calls, duration, conversation FROM call_rollups"
        " WHERE calls <> 0 OR duration <> 0 OR conversation <> 0"
    )
    counts = "SELECT account_id, type, status, calls FROM call_counts WHERE calls <> 0"
    numbers = (
        "SELECT account_id, side, day, number, type, status, calls, duration, conversation"
        " FROM number_rollups WHERE calls <> 0 OR duration <> 0 OR conversation <> 0"
    )
    waits = (
        "SELECT account_id, day, type, answered, wait, calls, conversation FROM wait_rollups"
        " WHERE calls <> 0 OR conversation <> 0"
    )
    hours = "SELECT account_id, hour, type, status, calls FROM hour_rollups WHERE calls <> 0"
    gaps = "SELECT account_id, day, since, callers FROM caller_gaps WHERE callers <> 0"
    grams = "SELECT account_id, field, gram, type, status, calls FROM gram_counts WHERE calls <> 0"
    lengths = (
        "SELECT account_id, field, seconds, type, status, calls FROM length_counts WHERE calls <> 0"
    )
    blocks = "SELECT account_id, block, type, status, calls FROM id_counts WHERE calls <> 0"
    pairs = (
        "SELECT account_id, duration, conversation, type, status, calls FROM length_pairs"
        " WHERE calls <> 0"
    )
    with db.connect() as conn:
        found = tuple(
            sorted(map(tuple, conn.execute(text(sql))))
            for sql in (
                rollups,
                counts,
                numbers,
                waits,
                hours,
                gaps,
                grams,
                lengths,
                blocks,
                pairs,
            )
        )
        firsts = sorted(map(tuple, conn.execute(select(callers))))
    return (*found, firsts)


def grams_truth(db: Engine) -> list[tuple[Any, ...]]:
    """Per account, number, substring of one or two characters without letters, type and
    status: how many calls hold it, read plainly from the calls."""
    found: Counter[tuple[Any, ...]] = Counter()
    with db.connect() as conn:
        for c in conn.execute(select(calls)):
            for field, value in enumerate((c.src, c.dst, c.external_number)):
                value = value or ""
                substrings = {value[i : i + n] for n in (1, 2) for i in range(len(value) - n + 1)}
                for gram in substrings:
                    if not any(ch.isalpha() for ch in gram):
                        found[c.account_id, field, gram, c.type, c.status] += 1
    return sorted((*k, v) for k, v in found.items())


def callers_truth(db: Engine) -> list[tuple[Any, ...]]:
    """Each outside number's first incoming call, read plainly from the calls."""
    first: dict[tuple[int, str], datetime] = {}
    with db.connect() as conn:
        for c in conn.execute(select(calls).where(calls.c.type == CallType.INCOMING)):
            key = (c.account_id, c.src)
            if c.src and (key not in first or c.started_at < first[key]):
                first[key] = c.started_at
    return sorted((*k, v) for k, v in first.items())


def local_truth(db: Engine) -> tuple[list[tuple[Any, ...]], ...]:
    """number_rollups, wait_rollups and hour_rollups read plainly from the calls: each call's
    local day (hour) in its account's zone; under its external number, the src of a call placed
    inside, the dst of one received; by whether it was answered (with a time) and its wait in
    whole seconds; per day how many outside numbers called in (incoming calls) whose previous
    such day was which."""
    numbers: dict[tuple[Any, ...], list[int]] = {}
    called: Counter[tuple[Any, ...]] = Counter()
    waits: dict[tuple[Any, ...], list[int]] = {}
    hours: Counter[tuple[Any, ...]] = Counter()
    with db.connect() as conn:
        zones = {
            a: ZoneInfo(tz)
            for a, tz in conn.execute(select(accounts_table.c.id, accounts_table.c.timezone))
        }
        rows = conn.execute(select(calls)).all()  # fmt: skip
    for r in rows:
        local = r.started_at.replace(tzinfo=UTC).astimezone(zones[r.account_id])
        day = (local.date() - date(1970, 1, 1)).days + tallies.KEY_BASE // 96
        hours[r.account_id, day * 24 + local.hour, r.type, r.status] += 1
        if r.type == CallType.INCOMING and r.src:
            called[r.account_id, r.src, day] += 1
        sides = [(0, ""), (1, r.external_number)] if r.external_number else [(0, "")]
        sides += [(2, r.src)] if r.type != CallType.INCOMING else []
        sides += [(3, r.dst)] if r.type != CallType.OUTGOING else []
        for side, number in sides:
            key = (r.account_id, side, day, number, r.type, r.status)
            for i, value in enumerate((1, r.duration, r.conversation)):
                numbers.setdefault(key, [0, 0, 0])[i] += value
        answered = r.status == CallStatus.ANSWERED and r.answered_at is not None
        wait = int((r.answered_at - r.started_at).total_seconds()) if answered else 0
        for i, value in enumerate((1, r.conversation)):
            waits.setdefault((r.account_id, day, r.type, int(answered), wait), [0, 0])[i] += value
    days_of: dict[tuple[int, str], list[int]] = {}
    for account_id, number, day in sorted(called):
        days_of.setdefault((account_id, number), []).append(day)
    gaps: Counter[tuple[int, int, int]] = Counter()
    for (account_id, _), days in days_of.items():
        for day, before in zip(days, [tallies.NEVER, *days], strict=False):
            gaps[account_id, day, before] += 1
    return (
        sorted((*k, *v) for k, v in numbers.items()),
        sorted((*k, *v) for k, v in waits.items()),
        sorted((*k, v) for k, v in hours.items()),
        sorted((*k, v) for k, v in gaps.items()),
    )


def test_kept_tallies_are_the_calls_grouped_and_the_rebuilt_ones(
    db: Engine, randomized: tuple[Tenant, ZoneInfo], cli_env: dict[str, str]
) -> None:
    bucket = {
        "postgresql": "CAST(floor(extract(epoch FROM started_at) / 900) AS integer)",
        "sqlite": "CAST(strftime('%s', started_at) AS integer) / 900",
    }[db.dialect.name]
    grouped = (
        f"SELECT account_id, {bucket} AS bucket, type, status, count(*) AS calls,"
        f" sum(duration) AS duration, sum(conversation) AS conversation FROM calls"
        f" GROUP BY account_id, {bucket}, type, status"
    )
    counted = (
        "SELECT account_id, type, status, count(*) FROM calls GROUP BY account_id, type, status"
    )
    lasting = " UNION ALL ".join(
        f"SELECT account_id, {field}, {name}, type, status, count(*) FROM calls"
        f" GROUP BY account_id, {name}, type, status"
        for field, name in enumerate(("duration", "conversation"))
    )
    blocked = (
        f"SELECT account_id, id / {tallies.ID_BLOCK}, type, status, count(*) FROM calls"
        f" GROUP BY account_id, id / {tallies.ID_BLOCK}, type, status"
    )
    paired = (
        "SELECT account_id, duration, conversation, type, status, count(*) FROM calls"
        " GROUP BY account_id, duration, conversation, type, status"
    )
    with db.connect() as conn:
        truth = (
            sorted(map(tuple, conn.execute(text(grouped)))),
            sorted(map(tuple, conn.execute(text(counted)))),
            *local_truth(db),
            grams_truth(db),
            sorted(map(tuple, conn.execute(text(lasting)))),
            sorted(map(tuple, conn.execute(text(blocked)))),
            sorted(map(tuple, conn.execute(text(paired)))),
            callers_truth(db),
        )
    assert {(a, n) for a, n, _ in truth[10]} == {
        (a, n) for a in (1, 2) for n in ("100", "101", "998901112233")
    }
    assert len(truth[2]) > 100  # every side, both accounts, several days
    assert len({row[4] for row in truth[3]}) > 20  # waits
    # gaps: numbers' first days and their later ones, in both accounts
    assert len(truth[5]) >= 10 and {row[2] == tallies.NEVER for row in truth[5]} == {True, False}
    kept = tallies_of(db)
    assert kept == truth
    with db.begin() as conn:  # a fault for the rebuild to repair
        conn.execute(text("UPDATE call_rollups SET calls = calls + 1"))
        conn.execute(text("DELETE FROM call_counts"))
        conn.execute(text("UPDATE number_rollups SET duration = duration + 1 WHERE side = 2"))
        conn.execute(text("DELETE FROM wait_rollups WHERE wait > 10"))
        conn.execute(text("DELETE FROM callers"))
        conn.execute(text("UPDATE hour_rollups SET calls = calls + 1 WHERE type = 2"))
        conn.execute(text("DELETE FROM gram_counts WHERE gram = '9'"))
        conn.execute(text("UPDATE length_counts SET calls = calls + 1 WHERE seconds > 30"))
        conn.execute(text("DELETE FROM id_counts WHERE type = 1"))
        conn.execute(text("UPDATE length_pairs SET calls = calls + 2 WHERE conversation = 5"))
        conn.execute(text("UPDATE caller_gaps SET callers = callers + 1 WHERE since = 0"))
    result = CliRunner().invoke(app, ["stats", "rebuild"], env=cli_env)
    tenant, _ = randomized
    assert result.exit_code == 0, result.output
    assert tenant.account_id == 1  # the other account is 2
    assert result.output == "account 1: 600 calls tallied\naccount 2: 150 calls tallied\n"
    assert tallies_of(db) == truth
    missing = CliRunner().invoke(app, ["stats", "rebuild", "--account", "99"], env=cli_env)
    assert (missing.exit_code, missing.output) == (1, "error: No account with id 99.\n")
    # Another timezone moves the calls' local days: recounted with the change.
    moved = CliRunner().invoke(
        app, ["accounts", "configure", "1", "--timezone", "America/New_York"], env=cli_env
    )
    assert moved.exit_code == 0, moved.output
    numbers, waits, hours, gaps = local_truth(db)
    assert tallies_of(db) == (*truth[:2], numbers, waits, hours, gaps, *truth[6:])
    assert numbers != truth[2] and hours != truth[4] and gaps != truth[5]


def test_totals_and_pages_match_plain_sql(
    client: TestClient, db: Engine, randomized: tuple[Tenant, ZoneInfo]
) -> None:
    tenant, zone = randomized
    rng = random.Random(7)
    span = 4 * 86400
    for _ in range(120):
        params: dict[str, str] = {}
        where: list[str] = []
        args: dict[str, Any] = {}

        # A bound lands on a quarter-hour, a second either side of one, or anywhere.
        def moment() -> datetime:
            if rng.random() < 0.5:
                return DAY0 + timedelta(
                    seconds=rng.randrange(0, span // 900) * 900 + rng.choice([-1, 0, 1])
                )
            return DAY0 + timedelta(seconds=rng.randrange(-3600, span + 3600))

        bounds = sorted([moment(), moment()])
        if rng.random() < 0.8:
            params["filter[from]"] = local(bounds[0], zone)
            where.append("started_at >= :lo")
            args["lo"] = bounds[0]
        if rng.random() < 0.8:
            params["filter[to]"] = local(bounds[1], zone)
            where.append("started_at <= :hi")
            args["hi"] = bounds[1]
        if rng.random() < 0.4:
            chosen = rng.sample(sorted(TYPES), rng.randint(1, 2))
            params["filter[type]"] = ",".join(chosen)
            where.append(f"type IN ({', '.join(str(int(TYPES[t])) for t in chosen)})")
        if rng.random() < 0.3:
            status = rng.choice(["1", "2"])
            params["filter[status]"] = status
            where.append(f"status = {status}")
        if rng.random() < 0.15:  # a filter no rollup can count
            params["filter[duration]"] = ">30"
            where.append("duration > 30")
        sort = rng.choice(list(SORTS))
        if sort:
            params["sort"] = sort
        truth = expected_ids(db, tenant.account_id, where, args, SORTS[sort])
        per_page = rng.choice([1, 7, 20, 50])
        pages = max(1, -(-len(truth) // per_page))
        page = rng.choice([1, pages, max(1, pages - 1), rng.randint(1, pages), pages + 1])
        params.update(per_page=str(per_page), page=str(page))
        response = client.get(URL, params=params, headers=tenant.headers)
        assert response.status_code == 200, (params, response.text)
        body = response.json()
        start = (page - 1) * per_page
        assert (body["meta"]["total"], [c["id"] for c in body["data"]]) == (
            len(truth),
            truth[start : start + per_page],
        ), params


def test_short_substring_totals_match_plain_sql(
    client: TestClient,
    db: Engine,
    randomized: tuple[Tenant, ZoneInfo],
    add_calls: Callable[..., list[int]],
) -> None:
    """A substring of one or two characters (alone, or with type and status) is counted from
    `gram_counts`, substrings of the external number from `number_rollups`; the total and pages
    must be what plain SQL finds, letters, LIKE's wildcards, repeated characters and lists of
    external number substrings included."""
    tenant, _ = randomized
    odd = [
        new_call(tenant.account_id, 1000 + n, src=src, dst=dst, external_number=ext)
        for n, (src, dst, ext) in enumerate(
            [("Reception 1a", "*97", "+998712"), ("10%_1", "1\\0", "a1a1"), ("111", "AB", None)]
        )
    ]
    add_calls(tenant.account_id, odd)
    find = {"postgresql": "strpos", "sqlite": "instr"}[db.dialect.name]
    rng = random.Random(11)
    values = ["1", "0", "9", "10", "99", "12", "+9", "*9", "%", "_", "%_", "\\", "a", "1a", "11"]
    longer = ["7811", "0590", "712005060", "5060,0590", "1a,A1", "998712", "%_,10"]
    for field in ("src", "dst", "external_number"):
        for value in values + (longer if field == "external_number" else []):
            params = {f"filter[{field}]": value, "per_page": "5"}
            each = [
                f"{find}(lower({field}), lower(:v{i})) > 0" for i in range(value.count(",") + 1)
            ]
            where = [f"({' OR '.join(each)})"]
            kinds(rng, params, where, types=rng.random() < 0.5, status=rng.random() < 0.4)
            sql = (
                f"SELECT id FROM calls WHERE account_id = :a AND {' AND '.join(where)} ORDER BY id"
            )
            with db.connect() as conn:
                args = {f"v{i}": v for i, v in enumerate(value.split(","))}
                truth = list(conn.scalars(text(sql), {"a": tenant.account_id, **args}))
            last = max(1, -(-len(truth) // 5))
            assert_pages(client, tenant.headers, params, truth, {1, last})
    with db.connect() as conn:  # a wildcard is kept as the character it is
        held = conn.execute(text("SELECT count(*) FROM gram_counts WHERE gram = '%_'")).scalar()
    assert held == 1


def searched_pages(
    client: TestClient,
    db: Engine,
    tenant: Tenant,
    rng: random.Random,
    search: tuple[str, str],
    match: str,
    statements: list[str],
) -> tuple[str, dict[str, str], list[str]]:
    """A list searching a substring (`search`: field, value; a comma list) with random type,
    status and sort: checks its first and last pages (of 7) against plain SQL, where `match`
    tests one value (`{field}` and `{i}`, the value's parameter `:v{i}`, filled in). Returns the
    condition of the substring alone, its parameters, and the statements of `calls` the list
    ran (`statements`: every statement run, cleared first)."""
    field, value = search
    params = {f"filter[{field}]": value, "per_page": "7"}
    each = [match.format(field=field, i=i) for i in range(value.count(",") + 1)]
    where = [f"({' OR '.join(each)})"]
    kinds(rng, params, where, types=rng.random() < 0.5, status=rng.random() < 0.4)
    sort = rng.choice(["", "-id", "datetime", "-duration"])
    if sort:
        params["sort"] = sort
    args = {f"v{i}": v for i, v in enumerate(value.split(","))}
    sql = f"SELECT id FROM calls WHERE account_id = :a AND {' AND '.join(where)}"
    with db.connect() as conn:
        found = conn.execute(
            text(f"{sql} ORDER BY {SORTS[sort]}"), {"a": tenant.account_id, **args}
        )
        truth = [row.id for row in found]
    statements.clear()
    assert_pages(client, tenant.headers, params, truth, {1, max(1, -(-len(truth) // 7))})
    ran = [s for s in statements if "FROM calls" in s and ("LIKE" in s or "instr(" in s)]
    return where[0], args, ran


def test_a_crowding_accounts_substrings_skip_the_indexes_account(
    client: TestClient,
    db: Engine,
    randomized: tuple[Tenant, ZoneInfo],
    make_tenant: Callable[..., Tenant],
    add_calls: Callable[..., list[int]],
) -> None:
    """A substring of 3 characters or more is searched through the trigram GIN indexes of
    (account, number). On PostgreSQL, for an account with half the calls or more, the account is
    checked on the rows found rather than asked of the index (`store._crowds`: the index would
    read every call of the account); a smaller account is asked of it. Either way the totals and
    pages are what plain SQL finds, with other filters, sorts and a list of substrings."""
    big, _ = randomized  # 600 of the 750 calls
    small = make_tenant()
    rng = random.Random(5)
    add_calls(small.account_id, [random_call(rng, small.account_id, n) for n in range(40)])
    db.dispose()  # no pooled connection remembers an earlier test's account of the same id
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(db, "before_cursor_execute", seen)
    try:
        with db.connect() as conn:  # not on Citus, whose shards hold an account or few
            gin = db.dialect.name == "postgresql" and not citus.sharded(conn)
        for tenant, crowding in ((big, gin), (small, False)):
            for search in [
                ("src", "998"), ("src", "1112233"), ("dst", "765"), ("dst", "102,4321"),
                ("external_number", "1130"), ("external_number", "0590,5060"),
            ]:  # fmt: skip
                match = "{field} LIKE '%' || :v{i} || '%'"
                _, _, ran = searched_pages(client, db, tenant, rng, search, match, statements)
                assert ran, search
                assert all(("calls.account_id + " in s) == crowding for s in ran), search
    finally:
        event.remove(db, "before_cursor_execute", seen)


def test_sqlite_finds_a_substrings_few_calls_from_its_trigram_index(
    client: TestClient,
    db: Engine,
    randomized: tuple[Tenant, ZoneInfo],
    add_calls: Callable[..., list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On SQLite a substring of 3 characters or more is looked up in the FTS5 trigram index of
    the numbers (`call_numbers`, kept by triggers) when it is in at most `store.FEW_NUMBERS`
    calls and the account has `store.INDEXED_FROM` calls or more, and every call of the account
    is tested otherwise. Either way, and on PostgreSQL, the
    totals and pages are what plain SQL finds: numbers with letters in either case, FTS5's own
    syntax (quotes, `OR`, `*`, brackets), LIKE's wildcards, lists, after calls were re-merged
    with other numbers (the fixture) and again here."""
    tenant, _ = randomized
    rng = random.Random(27)
    odd = [
        new_call(tenant.account_id, 2000 + n, src=src, dst=dst, external_number=ext)
        for n, (src, dst, ext) in enumerate(
            [
                ("Reception Desk", 'say "hi" OR *', "+998(71)200-50-60"),
                ("RECEPTION", "10%_1", "NEAR(a b)"),
                ("reception 2", "1\\05", None),
            ]
        )
    ]
    ids = add_calls(tenant.account_id, odd)
    with db.begin() as conn:  # re-merged: a call's numbers change, the index follows
        stored = store.get_many_by_call_id(conn, tenant.account_id, [odd[2].call_id])
        moved = dataclasses.replace(odd[2], src="Reception 3", dst="777", external_number="7811")
        store.update_calls(conn, tenant.account_id, [(stored[odd[2].call_id], moved)])
    sqlite = db.dialect.name == "sqlite"
    find = "instr" if sqlite else "strpos"
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    searches = [
        ("src", "998"), ("src", "1112233"), ("src", "reception"), ("src", "EPTION 3"),
        ("dst", '"hi" OR'), ("dst", "OR *"), ("dst", "%_1"), ("dst", "\\05"), ("dst", "777"),
        ("dst", "765,102"), ("external_number", "(71)"), ("external_number", "NEAR("),
        ("external_number", "7811"), ("external_number", "130,5060"), ("external_number", "zzz"),
    ]  # fmt: skip
    checked = 0
    event.listen(db, "before_cursor_execute", seen)
    try:
        # The account's 603 calls are searched by the index as if it had INDEXED_FROM calls;
        # then, as they are, by testing each of them.
        for few, indexed_from in ((store.FEW_NUMBERS, 0), (40, 0), (5000, store.INDEXED_FROM)):
            monkeypatch.setattr(store, "FEW_NUMBERS", few)
            monkeypatch.setattr(store, "INDEXED_FROM", indexed_from)
            db.dispose()  # no connection remembers the account's size (`store._sizes`)
            for search in searches:
                match = f"{find}(lower({{field}}), lower(:v{{i}})) > 0"
                where, args, ran = searched_pages(
                    client, db, tenant, rng, search, match, statements
                )
                with db.connect() as conn:  # every account's calls holding it
                    anywhere = text(f"SELECT count(*) FROM calls WHERE {where}")
                    held = conn.execute(anywhere, args).scalar_one()
                checked += bool(ran)  # (none when the rollups count and none matches)
                indexed = sqlite and held <= few and indexed_from <= 603
                assert all(("MATCH" in s) == indexed for s in ran), (search, held)
    finally:
        event.remove(db, "before_cursor_execute", seen)
    assert checked >= 3 * len(searches) - 6
    moved_to = client.get(URL, params={"filter[dst]": "777"}, headers=tenant.headers).json()
    assert [c["id"] for c in moved_to["data"]] == [ids[2]]
    if sqlite:  # the index holds exactly the calls' numbers
        with db.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO call_numbers(call_numbers, rank) VALUES ('integrity-check', 1)"
            )


def test_duration_and_conversation_totals_match_plain_sql(
    client: TestClient, db: Engine, randomized: tuple[Tenant, ZoneInfo]
) -> None:
    """Comparisons of the duration or the conversation alone (or with type and status) are
    counted from `length_counts`, of both from `length_pairs`: the total and pages must be what
    plain SQL finds, for every operator, lists of them, bounds on and either side of values the
    calls hold, and values no call can hold (negative, beyond 32 bits)."""
    tenant, _ = randomized
    rng = random.Random(13)
    operators = {"": "=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
    values = [0, 1, 5, 29, 30, 31, 40, 200, 239, -1, 2**40]
    for n in range(90):
        fields = (
            ["duration", "conversation"]
            if n % 3 == 2
            else [rng.choice(["duration", "conversation"])]
        )
        params = {"per_page": "7"}
        where = []
        for field in fields:
            comparisons = [
                (rng.choice(list(operators)), rng.choice(values))
                for _ in range(rng.choice([1, 1, 2]))
            ]
            params[f"filter[{field}]"] = ",".join(f"{op}{value}" for op, value in comparisons)
            each = [f"{field} {operators[op]} {value}" for op, value in comparisons]
            where.append(f"({' OR '.join(each)})")
        kinds(rng, params, where, types=n % 3 == 0, status=n % 4 == 0)
        sql = f"SELECT id FROM calls WHERE account_id = :a AND {' AND '.join(where)} ORDER BY id"
        with db.connect() as conn:
            truth = list(conn.scalars(text(sql), {"a": tenant.account_id}))
        last = max(1, -(-len(truth) // 7))
        assert_pages(client, tenant.headers, params, truth, {1, last})


def test_pages_sorted_by_duration_or_conversation_match_plain_sql(
    client: TestClient, db: Engine, randomized: tuple[Tenant, ZoneInfo]
) -> None:
    """A list sorted by duration or conversation, filtered by type, status or comparisons of the
    same column, is paged inside the seconds the histograms place its page in: every page, first
    to last and past it, is what plain SQL's ORDER BY gives, in both directions, with a second
    sort key, and after calls were re-merged into other seconds."""
    tenant, _ = randomized
    rng = random.Random(17)
    sorts = {
        "duration": "duration, id",
        "-duration": "duration DESC, id DESC",
        "conversation": "conversation, id",
        "-conversation,datetime": "conversation DESC, started_at, id",
        "duration,-id": "duration, id DESC",
        "conversation,duration": "conversation, duration, id",
        "conversation,-datetime": "conversation, started_at DESC, id DESC",
        "-duration,conversation": "duration DESC, conversation, id",
    }
    for n in range(60):
        sort = rng.choice(list(sorts))
        column = sort.lstrip("-").split(",")[0]
        params = {"sort": sort, "per_page": str(rng.choice([1, 7, 50]))}
        where: list[str] = []
        kinds(rng, params, where, types=n % 2 == 0, status=n % 3 == 0)
        if n % 5 == 1:
            params[f"filter[{column}]"] = f">={rng.choice([0, 5, 30])},<3"
            where.append(f"({column} >= {params[f'filter[{column}]'][2:].split(',')[0]}"
                         f" OR {column} < 3)")  # fmt: skip
        truth = expected_ids(db, tenant.account_id, where, {}, sorts[sort])
        size = int(params["per_page"])
        last = max(1, -(-len(truth) // size))
        pages = {1, 2, last // 2, last - 1, last, last + 1}
        assert_pages(client, tenant.headers, params, truth, pages)


def test_pages_sorted_by_length_under_other_filters_match_plain_sql(
    client: TestClient, db: Engine, randomized: tuple[Tenant, ZoneInfo]
) -> None:
    """A list sorted by duration or conversation under filters no histogram reads (the other
    length column, a period, a number) is walked along its sort key's index when its matches
    are many, and its matches sorted when they are few (at most one in store.SORTED_SHARE of the
    account's calls): either way each page is what plain SQL's ORDER BY gives. Both ways are
    taken here."""
    tenant, zone = randomized
    rng = random.Random(23)
    sorts = {
        "duration": "duration, id",
        "-duration": "duration DESC, id DESC",
        "conversation,-datetime": "conversation, started_at DESC, id DESC",
        "-conversation": "conversation DESC, id DESC",
        "-conversation,datetime": "conversation DESC, started_at, id",
        "conversation,duration": "conversation, duration, id",
        "duration,-datetime": "duration, started_at DESC, id DESC",
    }
    with db.connect() as conn:
        size = conn.execute(
            text("SELECT count(*) FROM calls WHERE account_id = :a"), {"a": tenant.account_id}
        ).scalar_one()
    sorted_here = walked = 0
    for n in range(54):
        sort = rng.choice(list(sorts))
        column = sort.lstrip("-").split(",")[0]
        other = "conversation" if column == "duration" else "duration"
        params = {"sort": sort, "per_page": str(rng.choice([1, 7, 50]))}
        where: list[str] = []
        args: dict[str, Any] = {}
        if n % 3 != 2:
            at_least = rng.choice([5, 30, 200])
            params[f"filter[{other}]"] = f">={at_least}"
            where.append(f"{other} >= {at_least}")
        if n % 3 != 0:
            lo = DAY0 + timedelta(seconds=rng.randrange(0, 3 * 86400))
            hi = lo + timedelta(seconds=rng.choice([3600, 86400, 3 * 86400]))
            params.update({"filter[from]": local(lo, zone), "filter[to]": local(hi, zone)})
            where += ["started_at >= :lo", "started_at <= :hi"]
            args.update(lo=lo, hi=hi)
        if n % 4 == 1:
            params["filter[src]"] = "10"
            where.append("src LIKE '%10%'")
        if n % 6 == 3:  # the sort key compared too: the joint histogram reads both
            params[f"filter[{column}]"] = "<=30,>=200"
            where.append(f"({column} <= 30 OR {column} >= 200)")
        kinds(rng, params, where, types=n % 5 == 0, status=n % 7 == 0)
        truth = expected_ids(db, tenant.account_id, where, args, sorts[sort])
        if len(truth) * store.SORTED_SHARE <= size:
            sorted_here += 1
        else:
            walked += 1
        per = int(params["per_page"])
        last = max(1, -(-len(truth) // per))
        pages = {1, 2, last // 2, last - 1, last, last + 1}
        assert_pages(client, tenant.headers, params, truth, pages)
    assert sorted_here >= 5 and walked >= 5, (sorted_here, walked)


def test_an_operators_totals_and_pages_match_plain_sql(
    client: TestClient, db: Engine, randomized: tuple[Tenant, ZoneInfo], password_hash: str
) -> None:
    """An operator's total under type, status and period filters is its calls as caller plus
    as answering party less those it was both, each counted from one index: it and its pages
    must be what plain SQL finds for `src IN (...) OR dst IN (...)`, with one extension and
    with two (calls between them counted once), and under other filters (counted from the
    calls)."""
    tenant, zone = randomized
    rng = random.Random(29)
    tokens = {}
    with db.begin() as conn:
        for owned in (("100",), ("100", "102")):
            user_id = accounts.create_user(
                conn, tenant.account_id, f"op{'-'.join(owned)}@example.com", "Op", "pw-operator",
                role=UserType.USER, extensions=owned, password_hash=password_hash,
            )  # fmt: skip
            tokens[owned] = accounts.create_token(conn, user_id, "test", ("*",))
    for n in range(40):
        owned = rng.choice(list(tokens))
        listed = ", ".join(f"'{e}'" for e in owned)
        where = [f"(src IN ({listed}) OR dst IN ({listed}))"]
        params = {"per_page": str(rng.choice([1, 7, 50]))}
        args: dict[str, Any] = {}
        if rng.random() < 0.6:
            lo = DAY0 + timedelta(seconds=rng.randrange(-3600, 3 * 86400))
            hi = lo + timedelta(seconds=rng.randrange(0, 2 * 86400))
            params.update({"filter[from]": local(lo, zone), "filter[to]": local(hi, zone)})
            where += ["started_at >= :lo", "started_at <= :hi"]
            args.update(lo=lo, hi=hi)
        kinds(rng, params, where, types=n % 2 == 0, status=n % 3 == 0)
        if n % 5 == 4:  # a filter the indexes do not carry: counted from the calls
            params["filter[conversation]"] = ">=5"
            where.append("conversation >= 5")
        sort = rng.choice(list(SORTS))
        if sort:
            params["sort"] = sort
        truth = expected_ids(db, tenant.account_id, where, args, SORTS[sort])
        per = int(params["per_page"])
        last = max(1, -(-len(truth) // per))
        headers = {"Authorization": f"Bearer {tokens[owned]}"}
        assert_pages(client, headers, params, truth, {1, last // 2, last})


def test_the_migration_rolls_up_the_calls_already_stored(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    migrate.upgrade(engine, revision="0007")
    rng = random.Random(3)
    with engine.begin() as conn:
        accounts.create_account(conn, "Old")
        rows = [random_call(rng, 1, n) for n in range(200)]
        conn.execute(
            calls.insert(),
            [
                {
                    "account_id": 1, "call_id": c.call_id, "started_at": c.started_at,
                    "ended_at": c.ended_at, "src": c.src, "dst": c.dst, "duration": c.duration,
                    "conversation": c.conversation, "type": int(c.type), "status": int(c.status),
                    "disposition": c.disposition, "created_at": DAY0, "updated_at": DAY0,
                }
                for c in rows
            ],
        )  # fmt: skip
    migrate.upgrade(engine)
    with engine.connect() as conn:
        rolled = conn.execute(
            text("SELECT bucket, sum(calls), sum(duration) FROM call_rollups GROUP BY bucket")
        ).all()
    truth: dict[int, list[int]] = {}
    for c in rows:
        tally = truth.setdefault(tallies.bucket_of(c.started_at), [0, 0])
        tally[0] += 1
        tally[1] += c.duration
    assert sorted(map(tuple, rolled)) == sorted((b, n, d) for b, (n, d) in truth.items())
    engine.dispose()


def skip_ids(db: Engine, last: int) -> None:
    """The next call stored gets id `last` + 1."""
    with db.begin() as conn:
        if db.dialect.name == "postgresql":
            sequence = "pg_get_serial_sequence('calls', 'id')"
            conn.execute(text(f"SELECT setval({sequence}, :last)"), {"last": last})
        else:  # the next rowid is the highest one's + 1: one more call, of no account's list
            account = accounts.create_account(conn, f"ids up to {last}")
            store.insert_calls(conn, account, [new_call(account, last)])
            conn.execute(text("UPDATE calls SET id = :last WHERE account_id = :a"),
                         {"last": last, "a": account})  # fmt: skip


def test_deep_pages_found_by_their_ids_match_plain_sql(
    client: TestClient,
    db: Engine,
    make_tenant: Callable[..., Tenant],
    add_calls: Callable[..., list[int]],
) -> None:
    """Pages past store.DEFERRED_OFFSET skipped rows are read by their ids first (sorted by id,
    start time, duration or conversation: inside the blocks of ids, quarter-hours or seconds the
    tallies place them in): the same rows, in the same order, forwards (first half) and
    backwards (second half), filtered or not, within a period whose ends cut quarter-hours or
    not."""
    assert store.DEFERRED_OFFSET == 1000
    rng = random.Random(6000)
    tenant = make_tenant(timezone="UTC")
    mine = [random_call(rng, tenant.account_id, n) for n in range(6000)]
    # Ids in three blocks of tallies.ID_BLOCK, the third not next to the second.
    add_calls(tenant.account_id, mine[:2000])
    skip_ids(db, tallies.ID_BLOCK + 7)
    add_calls(tenant.account_id, mine[2000:4000])
    skip_ids(db, 3 * tallies.ID_BLOCK - 400)
    add_calls(tenant.account_id, mine[4000:])
    # 3.5 days of the 4, in UTC, the account's zone: the ends cut quarter-hours.
    period = {"filter[from]": "2026-03-01 06:07:08", "filter[to]": "2026-03-04 19:03:00"}
    within = ["started_at >= :lo", "started_at <= :hi"]
    bounds = {"lo": datetime(2026, 3, 1, 6, 7, 8), "hi": datetime(2026, 3, 4, 19, 3)}
    for sort, order in SORTS.items():
        for extra, where in (
            ({}, []),
            ({"filter[type]": "1,2"}, ["type IN (1, 2)"]),
            ({"filter[duration]": ">30"}, ["duration > 30"]),
            ({**period, "filter[status]": "1"}, [*within, "status = 1"]),
        ):
            args = bounds if "filter[from]" in extra else {}
            truth = expected_ids(db, tenant.account_id, where, args, order)
            # Offsets 1,200 to 1,400 forwards; page 200 of 20 (offset 3,980, past the middle of
            # 6,000 calls) backwards from offset 2,000. Each list has a page deeper than
            # DEFERRED_OFFSET from both ends (the lists of 3,000 to 4,000 calls, several).
            pages = ((50, 25), (300, 5), (7, 180), (20, 71), (20, 200))
            deep = [min(s, len(truth) - s - n) for n, p in pages if (s := (p - 1) * n) < len(truth)]
            assert max(deep) >= store.DEFERRED_OFFSET, (extra, deep)
            for per_page, page in pages:
                params = {**extra, "per_page": str(per_page), "page": str(page)}
                if sort:
                    params["sort"] = sort
                body = client.get(URL, params=params, headers=tenant.headers).json()
                start = (page - 1) * per_page
                assert [c["id"] for c in body["data"]] == truth[start : start + per_page], params


def spans_of(db: Engine, account_id: int) -> tuple[dict[int, tuple[str, str]], ...]:
    """block → (first, last start) of the account's calls, as `id_spans` keeps them and as the
    calls are."""
    block = f"id / {tallies.SPAN_BLOCK}"
    truth = (
        f"SELECT {block}, min(started_at), max(started_at) FROM calls"
        f" WHERE account_id = :account GROUP BY {block}"
    )
    kept = "SELECT block, first_at, last_at FROM id_spans WHERE account_id = :account"
    with db.connect() as conn:  # SQLite's min() of text is text: both compared as text
        return tuple(
            {
                block: (str(first)[:19], str(last)[:19])
                for block, first, last in conn.execute(text(sql), {"account": account_id})
            }
            for sql in (kept, truth)
        )


def test_lists_in_id_order_within_a_period_match_plain_sql(
    client: TestClient,
    db: Engine,
    make_tenant: Callable[..., Tenant],
    add_calls: Callable[..., list[int]],
    cli_env: dict[str, str],
) -> None:
    """A list in id order filtered by a period is read between the blocks of ids whose spans of
    start times (`id_spans`) may hold the period's calls: the same totals and pages as plain SQL,
    first, deep and last pages, both directions, under type and status filters, whether the calls
    were stored in time order (as a PBX stores them), out of it (an old day imported late, a
    shuffled batch), or moved in time by a later leg. The spans kept hold every call's start
    (widened, never narrowed); `stats rebuild` narrows them to the calls'."""
    rng = random.Random(4096)
    size = tallies.SPAN_BLOCK
    tenant = make_tenant(timezone="UTC")
    web_session(client, tenant.email)
    mine = sorted(
        (random_call(rng, tenant.account_id, n) for n in range(3000)), key=lambda c: c.started_at
    )
    add_calls(tenant.account_id, mine[:1200])  # in time order, in big batches and small ones
    skip_ids(db, size - 300)
    add_calls(tenant.account_id, mine[1200:2400])
    for start in range(2400, 2460, 20):
        add_calls(tenant.account_id, mine[start : start + 20])
    skip_ids(db, 4 * size + 10)
    late = mine[2460:]
    rng.shuffle(late)
    add_calls(tenant.account_id, late)
    old = [  # the first day again, imported after the rest
        dataclasses.replace(random_call(rng, tenant.account_id, n), started_at=DAY0 + timedelta(
            seconds=rng.randrange(0, 86400)))
        for n in range(3000, 3300)
    ]  # fmt: skip
    skip_ids(db, 7 * size)
    add_calls(tenant.account_id, old)
    # Late legs move a few calls by hours, either way; the first ones, later.
    first = [c for c in mine if c.started_at == mine[0].started_at]
    with db.begin() as conn:
        moved = [*first, *rng.sample(mine[1200:2400], 40)]
        stored = store.get_many_by_call_id(conn, tenant.account_id, [c.call_id for c in moved])
        hours = [30] * len(first) + [rng.choice([-9, 7]) for _ in range(40)]
        again = [
            dataclasses.replace(c, started_at=c.started_at + timedelta(hours=n))
            for c, n in zip(moved, hours, strict=True)
        ]
        store.update_calls(conn, tenant.account_id, [(stored[c.call_id], c) for c in again])
    kept, truth = spans_of(db, tenant.account_id)
    assert len(truth) == 4 and kept.keys() == truth.keys()
    assert all(kept[k][0] <= first and kept[k][1] >= last for k, (first, last) in truth.items())
    assert kept != truth  # the moved calls left their spans wider
    periods = [
        ("2026-03-02 10:00:00", "2026-03-02 10:59:59"),  # an hour of the calls stored in order
        ("2026-03-03 00:00:00", "2026-03-03 23:59:59"),  # a day, the blocks at both ends cut
        ("2026-03-01 00:00:00", "2026-03-01 23:59:59"),  # the day imported twice
        ("2026-03-04 12:00:00", None),  # the shuffled end
        (None, "2026-03-01 06:30:00"),
        ("2026-03-02 07:00:00", "2026-03-02 07:00:00"),  # one second
        ("2026-03-09 00:00:00", "2026-03-09 23:59:59"),  # no call
    ]
    for low, high in periods:
        period: dict[str, str] = {}
        where, args = [], {}
        if low is not None:
            period["filter[from]"] = low
            where.append("started_at >= :lo")
            args["lo"] = datetime.fromisoformat(low)
        if high is not None:
            period["filter[to]"] = high
            where.append("started_at <= :hi")
            args["hi"] = datetime.fromisoformat(high)
        for sort, order in (("", "id"), ("-id", "id DESC")):
            for extra, also in (
                ({}, []),
                ({"filter[type]": "1,3"}, ["type IN (1, 3)"]),
                ({"filter[status]": "2"}, ["status = 2"]),
            ):
                params = {**period, **extra, "per_page": "25"}
                if sort:
                    params["sort"] = sort
                ids = expected_ids(db, tenant.account_id, [*where, *also], args, order)
                last = max(1, -(-len(ids) // 25))
                pages = {1, 2, last // 2, last - 1, last, last + 1}
                assert_pages(client, tenant.headers, params, ids, pages)
                pages = {1, 3, 50, 51} if len(ids) > 2000 else {1, 3}  # past DEFERRED_OFFSET
                assert_pages(client, tenant.headers, {**params, "per_page": "40"}, ids, pages)
                if not extra:  # the web app's export: every page, from the same blocks
                    exported = client.get("/export.csv", params={**params, "sort": sort or "id"})
                    assert exported.status_code == 200, exported.text
                    rows = list(csv.reader(io.StringIO(exported.text)))[1:]
                    assert [int(row[0]) for row in rows] == ids, params
    result = CliRunner().invoke(app, ["stats", "rebuild"], env=cli_env)
    assert result.exit_code == 0, result.output
    kept, truth = spans_of(db, tenant.account_id)
    assert kept == truth


@pytest.mark.parametrize(
    "zone",
    [
        "America/Santiago",  # 2026-04-05 00:00 back to 23:00: a day in two stretches
        "America/Havana",  # 2026-03-08 00:00 forward to 01:00: a day without its first hour
        "Australia/Lord_Howe",  # half-hour daylight saving
        "Pacific/Chatham",  # UTC+12:45
        "Europe/Berlin",
    ],
)
@pytest.mark.parametrize("per", [tallies.HOUR, tallies.DAY])
def test_whole_days_and_edges_cover_a_period_once(zone: str, per: int) -> None:
    """tallies.Days: every instant of a period is in exactly one whole local day or hour (a key
    the instant has, all of whose instants are in the period) or one edge; none outside it."""
    tz = ZoneInfo(zone)
    rng = random.Random(zone)
    transitions = [datetime(2026, 3, 7, 12), datetime(2026, 4, 3), datetime(2026, 9, 5),
                   datetime(2026, 10, 24)]  # fmt: skip
    cut = 0
    for _ in range(40):
        lo = rng.choice(transitions) + timedelta(seconds=rng.randrange(0, 3 * 86400))
        if rng.random() < 0.5:  # local midnight, as a whole-day filter gives
            day = lo.replace(tzinfo=UTC).astimezone(tz).replace(hour=0, minute=0, second=0)
            lo = day.astimezone(UTC).replace(tzinfo=None)
        hi = lo + timedelta(seconds=rng.randrange(0, 4 * 86400))
        days = tallies.Days.of(lo, hi, tz, per)
        cut += days is not None
        probes = {lo, hi, lo - timedelta(seconds=1), hi + timedelta(seconds=1)}
        start = tallies.start_of(tallies.bucket_of(lo) - 96)
        for n in range(int((hi - lo).total_seconds()) // 900 + 200):
            at = start + timedelta(seconds=900 * n)
            probes |= {at, at + timedelta(seconds=1), at + timedelta(seconds=899)}
        for at in sorted(probes):
            key = tallies.local_of(tallies.bucket_of(at), tz, per)
            local = at.replace(tzinfo=UTC).astimezone(tz)
            local_day = (local.date() - date(1970, 1, 1)).days
            hours = local.hour if per == tallies.HOUR else 0
            assert key == (local_day * 96 + hours * 4 + tallies.KEY_BASE) // per, at
            inside = lo <= at <= hi
            if days is None:  # no whole day: the caller counts the period's calls
                continue
            whole = any(a <= key <= b for a, b in days.runs)
            edges = sum(a <= at < b or (included and at == b) for a, b, included in days.edges)
            assert (whole or edges == 1) == inside and not (whole and edges), (lo, hi, at)
    assert cut > 20


def test_the_indexes_that_order_a_list_carry_type_and_status(db: Engine) -> None:
    """PostgreSQL: a page inside a window of its sort key, filtered by type or status, finds its
    ids from the index that orders it alone (migration 0021); the start time's index carries the
    seconds too (0026)."""
    if db.dialect.name != "postgresql":
        pytest.skip("INCLUDE columns are PostgreSQL's")
    names = ["ix_calls_account_id", "ix_calls_account_started", "ix_calls_account_duration",
             "ix_calls_account_conversation"]  # fmt: skip
    with db.connect() as conn:
        if citus.sharded(conn):  # the primary key (account_id, id) took the first one's place
            names.remove("ix_calls_account_id")
        found = dict(
            conn.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(:names)"),
                {"names": names},
            ).all()
        )
    assert sorted(found) == sorted(names)
    started = found.pop("ix_calls_account_started")
    assert started.endswith("INCLUDE (type, status, duration, conversation)"), started
    assert all(d.endswith("INCLUDE (type, status)") for d in found.values()), found


def test_the_number_indexes_carry_what_an_operators_total_reads(db: Engine) -> None:
    """An operator's total is counted from the src and dst indexes alone: they carry type and
    status, the src one the dst too (INCLUDE on PostgreSQL, migration 0023; trailing key columns
    on SQLite, 0028)."""
    if db.dialect.name == "sqlite":
        with db.connect() as conn:
            keys = {
                name: [row[2] for row in conn.exec_driver_sql(f"PRAGMA index_info({name})")]
                for name in ("ix_calls_account_src_started", "ix_calls_account_dst_started")
            }
        assert keys == {
            "ix_calls_account_src_started": [
                "account_id", "src", "started_at", "type", "status", "dst"
            ],
            "ix_calls_account_dst_started": ["account_id", "dst", "started_at", "type", "status"],
        }  # fmt: skip
        return
    with db.connect() as conn:
        found = dict(
            conn.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE :pattern"),
                {"pattern": "ix_calls_account_%_started"},
            ).all()
        )
    src, dst = found["ix_calls_account_src_started"], found["ix_calls_account_dst_started"]
    assert src.endswith("(account_id, src, started_at) INCLUDE (dst, type, status)"), src
    assert dst.endswith("(account_id, dst, started_at) INCLUDE (type, status)"), dst
