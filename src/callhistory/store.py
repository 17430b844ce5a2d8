"""Every SQL statement about calls: search, count, get, insert. SQLAlchemy Core."""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    and_,
    any_,
    bindparam,
    cast,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.types import ARRAY

from callhistory import bulk, citus, tallies
from callhistory.bulk import in_chunks, one_of
from callhistory.models import CallType, NewCall
from callhistory.prepared import Prepared
from callhistory.query import CallQuery, Comparison, Sort
from callhistory.schema import (
    call_counts,
    call_integrations,
    call_rollups,
    calls,
    dialect_insert,
    gram_counts,
    id_counts,
    id_spans,
    integrations,
    length_counts,
    length_pairs,
    number_rollups,
)

#: A row of any width (SQLAlchemy 2.1 types rows by their columns).
AnyRow = Row[*tuple[Any, ...]]

#: What the API reads of a call (the show resource needs them all).
CALL_COLUMNS = (
    calls.c.id,
    calls.c.call_id,
    calls.c.pbx_call_id,
    calls.c.started_at,
    calls.c.answered_at,
    calls.c.ended_at,
    calls.c.src,
    calls.c.dst,
    calls.c.external_number,
    calls.c.duration,
    calls.c.conversation,
    calls.c.type,
    calls.c.status,
    calls.c.disposition,
    calls.c.legs,
    calls.c.recording,
)


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose calls a reader sees: the whole account (an ADMIN, the CLI), or, when `extensions` is
    set (a USER, an operator), only the calls where one of them is the caller (`src`) or the
    answering party (`dst`; for a missed call, the extension it rang). Every read of calls takes
    one, so no route can forget the narrowing."""

    account_id: int
    extensions: frozenset[str] | None = None

    @property
    def whole(self) -> bool:
        """True when the scope is the whole account: the counters and rollups can answer."""
        return self.extensions is None

    def narrowing(self) -> list[ColumnElement[bool]]:
        """The conditions beyond the account (none for the whole account)."""
        if self.extensions is None:
            return []
        owned = sorted(self.extensions)
        return [or_(calls.c.src.in_(owned), calls.c.dst.in_(owned)) if owned else false()]

    def conditions(self) -> list[ColumnElement[bool]]:
        return [calls.c.account_id == self.account_id, *self.narrowing()]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


#: The characters of a trigram: a shorter substring holds none for the trigram indexes.
TRIGRAM = 3


def _contains(column: Any, value: str, dialect: str) -> ColumnElement[bool]:
    """Case-insensitive substring match. A value without letters (phone numbers, the usual case)
    has no case to fold: plain LIKE means the same and costs half of ILIKE per row; on SQLite,
    which has no index for it and tests every row, `instr` means the same again and costs 40%
    less than LIKE (55 against 92 ms over 1M calls). A value of one or two characters holds no
    trigram: PostgreSQL's trigram index would return every call of every account to recheck,
    and the planner, which expects one row from it, chose it (17 s for `external_number` holding
    `43` in a 2-day period at 10M calls, against 0.4 s along the period's index): such a value
    is matched on an expression no index holds."""
    pattern = _like_pattern(value)
    letters = value.lower() != value.upper()
    if dialect == "sqlite" and not letters:
        return func.instr(column, value) > 0
    if len(value) < TRIGRAM:
        column = column.concat("")
    if letters:
        return column.ilike(pattern, escape="\\")  # type: ignore[no-any-return]
    return column.like(pattern, escape="\\")  # type: ignore[no-any-return]


#: SQLite's full-text index of the calls' numbers by trigram (migration 0027), its rowid the
#: call's id. Its own metadata: a virtual table no `create_all` makes.
call_numbers = Table(
    "call_numbers", MetaData(), Column("rowid", Integer), Column("call_numbers", String)
)

#: Up to how many calls (of every account) SQLite reads a substring's matches from its trigram
#: index (`_found_few`): counting them and sorting a page of them cost ~4 ms each at 5,000.
FEW_NUMBERS = 5000
#: From how many calls an account's substring searches ask SQLite's trigram index: testing
#: 50,000 calls' numbers costs 3-4 ms, a few times what asking the index does.
INDEXED_FROM = 50_000


def _found_few(
    conn: Connection, account_id: int, name: str, values: Sequence[str]
) -> ColumnElement[bool] | None:
    """SQLite: the calls whose number `name` may hold one of `values`, from the trigram index,
    when they are few (at most FEW_NUMBERS in every account): a condition that narrows the calls
    to those, beside the exact match (`_contains`; the index folds case as ILIKE does, and more).
    Asking the index how many costs under a millisecond, since it stops at FEW_NUMBERS + 1.
    Without it, every call of the account is tested (55-90 ms at 1M calls). Not for many
    matches: SQLite then reads each of them by its id, though another filter (a day) or the
    order of the list (the first page of a common prefix) would find the page after a few rows
    (a day's calls with a prefix of 28% of the calls: 184 ms, against 3 without). Nor for a
    value of one or two characters, which holds no trigram, nor for an account of fewer than
    INDEXED_FROM calls, whose calls are tested sooner than the index is asked."""
    if conn.dialect.name != "sqlite" or any(len(v) < TRIGRAM for v in values):
        return None
    if _sizes(conn, account_id)[0] < INDEXED_FROM:
        return None
    phrases = " OR ".join('"' + value.replace('"', '""') + '"' for value in values)
    found = select(call_numbers.c.rowid).where(
        call_numbers.c.call_numbers.match(f"{name} : ({phrases})")
    )
    probe = select(func.count()).select_from(found.limit(FEW_NUMBERS + 1).subquery())
    if conn.execute(probe).scalar_one() > FEW_NUMBERS:
        return None
    return calls.c.id.in_(found)


def _compared(column: Any, comparisons: Sequence[tuple[Comparison, int]]) -> ColumnElement[bool]:
    """Any of the comparisons holds for the column's value."""
    terms: list[ColumnElement[bool]] = []
    for op, number in comparisons:
        # Bound as BIGINT: any int64 compares correctly with the INTEGER column, and
        # PostgreSQL's btree still serves the cross-type comparison from the index.
        value = literal(number, BigInteger)
        terms.append(
            {
                "=": column == value,
                ">": column > value,
                ">=": column >= value,
                "<": column < value,
                "<=": column <= value,
            }[op]
        )
    return or_(*terms)


#: How long a connection trusts what it read of the numbers of calls (`_sizes`).
SHARE_SECONDS = 60.0


def _sizes(conn: Connection, account_id: int) -> tuple[int, int]:
    """(the account's calls, every account's) from the counters, read at most once in
    SHARE_SECONDS by a connection: strategies that depend on them do not need them exact."""
    known: dict[int, tuple[float, tuple[int, int]]] = conn.info.setdefault("sizes", {})
    now = time.monotonic()
    if account_id not in known or now - known[account_id][0] > SHARE_SECONDS:
        cc = call_counts.c
        mine = func.coalesce(func.sum(cc.calls).filter(cc.account_id == account_id), 0)
        every = func.coalesce(func.sum(cc.calls), 0)
        held, of = conn.execute(select(mine, every)).one()
        known[account_id] = (now, (int(held), int(of)))
    return known[account_id][1]


def _crowds(conn: Connection, account_id: int, query: CallQuery) -> bool:
    """Whether the trigram GIN indexes (account, number) should not be asked for the account:
    when the query searches a substring they serve (3 characters or more) and the account holds
    half the calls or more. The GIN index then intersects the trigrams' matches with the
    account's own list of entries, all of its calls: at 10M calls, 25 ms of a 4-digit search's
    28 (and twice, count and page), where the trigrams alone find 2,800 candidates in 2 ms and
    the account is checked on the rows read anyway. A small account keeps the index's account:
    it skips the other accounts' matches. Read from the counters, once a minute a connection;
    PostgreSQL only (not Citus, whose shards hold an account or few)."""
    if not any(len(v) >= TRIGRAM for values in query.text.values() for v in values):
        return False
    if conn.dialect.name != "postgresql" or citus.sharded(conn):
        return False
    held, of = _sizes(conn, account_id)
    return held > 0 and 2 * held >= of


def _the_account(
    conn: Connection, account_id: int, query: CallQuery, *, equal: bool = True
) -> ColumnElement[bool]:
    """The account's calls: an equality, or a range (`_ordered` says when), or, when it crowds
    the trigram indexes (`_crowds`), an expression no index holds (its rows are then found by
    the other filters' indexes and checked for the account)."""
    if _crowds(conn, account_id, query):
        return (calls.c.account_id + 0) == account_id
    return _account(equal, account_id)


def _account(equal: bool, account: Any) -> ColumnElement[bool]:
    """The account's calls, as an equality or as a range (`_ordered` says when each)."""
    return calls.c.account_id == account if equal else calls.c.account_id.between(account, account)


def _conditions(
    conn: Connection,
    scope: Scope,
    query: CallQuery,
    *,
    equal: bool = True,
    total: int | None = None,
) -> list[ColumnElement[bool]]:
    """The query's conditions on the calls, the account's first (`_the_account`). `total`: how
    many calls the query matches, when known (more than FEW_NUMBERS: `_found_few` has nothing to
    ask the index, and a substring as common as a DID's digits skips asking it)."""
    conditions = [_the_account(conn, scope.account_id, query, equal=equal), *scope.narrowing()]
    for name, values in query.text.items():
        conditions.append(or_(*(_contains(calls.c[name], v, conn.dialect.name) for v in values)))
        if total is not None and total > FEW_NUMBERS:
            continue
        if (few := _found_few(conn, scope.account_id, name, values)) is not None:
            conditions.append(few)
    for name, comparisons in query.numbers.items():
        conditions.append(_compared(calls.c[name], comparisons))
    if query.types:
        conditions.append(calls.c.type.in_([int(t) for t in query.types]))
    if query.statuses:
        conditions.append(calls.c.status.in_([int(s) for s in query.statuses]))
    if query.integration_statuses:
        # Few calls fail to sync: find them from the sync rows, then keep the account's.
        conditions.append(
            calls.c.id.in_(
                select(call_integrations.c.call_history_id).where(
                    call_integrations.c.account_id == scope.account_id,
                    call_integrations.c.status.in_(query.integration_statuses),
                )
            )
        )
    if query.started_from is not None:
        conditions.append(calls.c.started_at >= query.started_from)
    if query.started_to is not None:
        # Inclusive; stored times are whole seconds.
        conditions.append(calls.c.started_at <= query.started_to)
    return conditions


def count(conn: Connection, scope: Scope, query: CallQuery) -> int:
    """The exact number of calls the query matches."""
    if (query.tallied and scope.whole) or _by_owner(scope, query):
        return sum(counts(conn, scope, query).values())
    return _count_calls(conn, _conditions(conn, scope, query))


def _by_owner(scope: Scope, query: CallQuery) -> bool:
    """Whether an operator's total is counted as its calls as caller plus as answering party
    less those it was both (`_owned`): under type, status and period filters at most."""
    return not scope.whole and bool(scope.extensions) and query.counted_by_period


def counts(conn: Connection, scope: Scope, query: CallQuery) -> Counter[tuple[int, int]]:
    """The exact number of calls the query matches by (type, status): from the counters when
    only type and status filter (and from the gram counts when a substring of one or two
    characters does too, from the day rollups by external number when substrings of it do, from
    the histograms of seconds when comparisons of the duration or the conversation do), from
    the rollups (and the calls of the partial quarter-hours at the ends) when a period does too,
    and by counting the matching calls otherwise (always for a scope narrower than the account:
    the counters and rollups are per account)."""
    account_id = scope.account_id
    params: dict[str, int] = {}
    if _by_owner(scope, query):
        assert scope.extensions is not None
        stmt: Any = _owned(conn, scope.account_id, sorted(scope.extensions), query)
    elif not scope.whole:
        stmt = grouped(*_conditions(conn, scope, query))
    elif query.counted_by_type_and_status:
        filters = type_and_status(call_counts, query)
        stmt = _COUNTS.where(*filters) if filters else _ALL_COUNTS
        params = {"account": account_id}
    elif (substrings := query.external_substrings) is not None:
        nr = number_rollups.c
        stmt = select(nr.type, nr.status, nr.calls).where(
            nr.account_id == account_id,
            nr.side == tallies.EXTERNAL,
            or_(*(_contains(nr.number, value, conn.dialect.name) for value in substrings)),
            *type_and_status(number_rollups, query),
        )
    elif query.gram is not None:
        name, gram = query.gram
        g = gram_counts.c
        stmt = select(g.type, g.status, g.calls).where(
            g.account_id == account_id,
            g.field == tallies.GRAM_FIELDS.index(name),
            g.gram == gram,
            *type_and_status(gram_counts, query),
        )
    elif query.paired:
        lp = length_pairs.c
        summed = cast(func.sum(lp.calls), BigInteger)
        stmt = (
            select(lp.type, lp.status, summed)
            .where(*_pairs_of(account_id, query))
            .group_by(lp.type, lp.status)
        )
    elif (lengths := query.lengths) is not None:
        lc = length_counts.c
        summed = cast(func.sum(lc.calls), BigInteger)  # thousands of seconds: summed in SQL
        stmt = (
            select(lc.type, lc.status, summed)
            .where(*_lengths_of(account_id, query, lengths[0]))
            .group_by(lc.type, lc.status)
        )
    elif (period := tallies.Period.of(query.started_from, query.started_to)) is None or not (
        query.counted_by_period
    ):
        stmt = grouped(*_conditions(conn, scope, query))
    else:
        parts = period_buckets(conn.dialect.name, account_id, query, period)
        summed = cast(func.sum(parts.c.calls), BigInteger)  # PostgreSQL: else numeric
        stmt = select(parts.c.type, parts.c.status, summed).group_by(parts.c.type, parts.c.status)
    found: Counter[tuple[int, int]] = Counter()
    rows = stmt.rows(conn, params) if isinstance(stmt, Prepared) else conn.execute(stmt, params)
    for type_, status, n in rows:
        found[type_, status] += n
    return found


#: The account's counters: every unfiltered list page reads them, with a statement built once.
_COUNTS = select(call_counts.c.type, call_counts.c.status, call_counts.c.calls).where(
    call_counts.c.account_id == bindparam("account")
)
_ALL_COUNTS = Prepared(_COUNTS)


def _owned(conn: Connection, account_id: int, extensions: list[str], query: CallQuery) -> Any:
    """An operator's calls under type, status and period filters by (type, status): those its
    extensions placed, plus those they answered, less those they did both (a call between two of
    them), each counted from one index alone (the src index carries the dst)."""
    both = _conditions(conn, Scope(account_id), query)
    src, dst = calls.c.src.in_(extensions), calls.c.dst.in_(extensions)
    parts = [grouped(*both, src), grouped(*both, dst)]
    twice = select(calls.c.type, calls.c.status, (-func.count()).label("calls"))
    parts.append(twice.where(*both, src, dst).group_by(calls.c.type, calls.c.status))
    return union_all(*parts)


def grouped(*conditions: ColumnElement[bool]) -> Any:
    """The calls matching `conditions`, counted by (type, status)."""
    return (
        select(calls.c.type, calls.c.status, func.count().label("calls"))
        .where(*conditions)
        .group_by(calls.c.type, calls.c.status)
    )


def period_buckets(dialect: str, account_id: int, query: CallQuery, period: tallies.Period) -> Any:
    """(bucket, type, status, calls) of the account's calls in `period` under the query's type
    and status filters: the whole buckets from the rollups, the partial ones at the two ends
    counted from the calls. A subquery for the totals and the statistics to group."""
    rolled = select(
        call_rollups.c.bucket, call_rollups.c.type, call_rollups.c.status, call_rollups.c.calls
    ).where(
        call_rollups.c.account_id == account_id,
        call_rollups.c.calls != 0,
        *type_and_status(call_rollups, query),
        *period.whole_buckets(call_rollups.c.bucket),
    )
    same = [calls.c.account_id == account_id, *type_and_status(calls, query)]
    edges = [by_bucket(dialect, *same, *edge) for edge in period.edges(calls.c.started_at)]
    return union_all(rolled, *edges).subquery()


def by_bucket(dialect: str, *conditions: ColumnElement[bool]) -> Any:
    """The calls matching `conditions`, counted by (bucket, type, status)."""
    bucket: ColumnElement[int] = literal_column(tallies.BUCKET_SQL[dialect], Integer)
    return (
        select(bucket.label("bucket"), calls.c.type, calls.c.status, func.count().label("calls"))
        .where(*conditions)
        .group_by(bucket, calls.c.type, calls.c.status)
    )


def type_and_status(table: Table, query: CallQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.types:
        conditions.append(table.c.type.in_([int(t) for t in query.types]))
    if query.statuses:
        conditions.append(table.c.status.in_([int(s) for s in query.statuses]))
    return conditions


def _count_calls(conn: Connection, conditions: list[ColumnElement[bool]]) -> int:
    stmt = select(func.count()).select_from(calls).where(*conditions)
    return int(conn.execute(stmt).scalar_one())


def _ordered(
    conn: Connection,
    scope: Scope,
    query: CallQuery,
    backwards: bool = False,
    within: Sequence[ColumnElement[bool]] = (),
    *,
    sort_here: bool = False,
    total: int | None = None,
) -> Any:
    """Every call the query matches, in its order (reversed if asked), inside the window of its
    first sort key `within` (`_placed`) if given: a SELECT to page or stream.
    The account leads the order like it leads every index, and is a range rather than a constant
    to the planner (which drops a constant from ORDER BY): only the account's btree indexes give
    this order, so a big account is never read along the primary key past other accounts' calls.
    Not with a substring filter: the trigram GIN index would then scan the account's whole range
    (measured 131 ms instead of 2 at 10M calls); its bitmap and a top-N sort serve that order.
    Nor inside a window: a btree scan bounded by a range of its first column cannot stop at the
    end of a range of its second (measured 850 ms instead of 1 for 59 calls at 10M calls), and
    the window keeps a scan along the primary key short. Nor on Citus, which routes a query to
    its shard by an equality only (and whose shards have no index but the account's).
    `sort_here`: in an order no index gives, so that the matches are found by the filters'
    indexes and sorted (`_sorts_matches`). `total`: the query's, when known (`_conditions`)."""
    equal = bool(query.text or within or sort_here) or citus.sharded(conn)
    conditions = [*_conditions(conn, scope, query, equal=equal, total=total), *within]
    order = _order(query.sort, backwards, sort_here)
    return select(*CALL_COLUMNS).where(*conditions).order_by(*order)


def _order(sort: tuple[Sort, ...], backwards: bool, unindexed: bool = False) -> list[Any]:
    """ORDER BY the sort keys (each reversed when `backwards`), the account first; `unindexed`:
    the first sort key (a number of seconds) `+ 0`, an expression no index orders by."""
    keys = (Sort("account_id", sort[0].descending), *sort)
    found = []
    for n, k in enumerate(keys):
        key: Any = calls.c[k.column] + 0 if unindexed and n == 1 else calls.c[k.column]
        found.append(key.desc() if k.descending != backwards else key)
    return found


@functools.lru_cache(maxsize=64)
def _unfiltered_page(sharded: bool, sort: tuple[Sort, ...], backwards: bool) -> Prepared:
    """`_ordered`'s page of an unfiltered list of the whole account, built once per order and
    reused with its parameters: most list requests are this one, and building a statement costs
    about as much CPU as running it."""
    account = _account(sharded, bindparam("account"))
    page = select(*CALL_COLUMNS).where(account).order_by(*_order(sort, backwards))
    return Prepared(page.limit(bindparam("limit")).offset(bindparam("offset")), literal=True)


def search(
    conn: Connection, scope: Scope, query: CallQuery, total: int | None = None
) -> Sequence[AnyRow]:
    """One page of calls; never loads more rows than the page. Given the total, a page in the
    second half is read from the other end (the reversed order, a small offset) and turned round:
    the same rows, without walking past every row before them."""
    matches = _sorts_matches(conn, scope, query, total)
    found = total  # the query's (`_placed` may narrow `total` to a window's)
    within: list[ColumnElement[bool]] = []
    if matches:
        offset = query.offset
    else:
        within, offset, total = _placed(conn, scope, query, total)
    limit, backwards = query.per_page, False
    if total is not None and total - offset < offset:
        offset, limit, backwards = max(0, total - offset - limit), min(limit, total - offset), True
    stmt: Any = None
    if matches:
        stmt = _ordered(conn, scope, query, backwards, sort_here=True, total=found)
        stmt = stmt.limit(limit).offset(offset)
    elif offset < DEFERRED_OFFSET and scope.whole and query.unfiltered and not within:
        page = _unfiltered_page(citus.sharded(conn), query.sort, backwards)
        rows = page.rows(conn, {"account": scope.account_id, "limit": limit, "offset": offset})
    elif offset < DEFERRED_OFFSET and not (within and (query.types or query.statuses)):
        stmt = _ordered(conn, scope, query, backwards, within, total=found)
        stmt = stmt.limit(limit).offset(offset)
    else:
        ordered = _ordered(conn, scope, query, backwards, within, total=found)
        # A deep page: walk the offset over ids alone (an index-only scan of the index that gives
        # the order), then read the page's rows: 25,000 skipped rows cost 25,000 heap reads
        # otherwise (measured 90 ms at 1M calls). So too inside a window under type or status
        # filters, which that index carries: the calls they reject there are skipped without
        # reading them (300,000 of them among the shortest calls, for answered internal ones).
        ids = ordered.with_only_columns(calls.c.id).limit(limit).offset(offset)
        stmt = ordered.where(calls.c.id.in_(ids))
    if stmt is not None:
        rows = conn.execute(stmt).all()
    return rows[::-1] if backwards else rows


#: From how many skipped rows a page is found by its ids first (`search`).
DEFERRED_OFFSET = 1000
#: Up to how many matches (and what share of the account's calls) a list sorted by duration or
#: conversation under filters no histogram reads is sorted, not walked (`_sorts_matches`).
SORTED_MATCHES, SORTED_SHARE = 50_000, 20


def _sorts_matches(conn: Connection, scope: Scope, query: CallQuery, total: int | None) -> bool:
    """Whether to sort the matches of a list sorted by duration or conversation under filters no
    histogram reads (a number, a period, the other length column), rather than walk the index
    of its sort key: when they are few, at most SORTED_MATCHES and one in SORTED_SHARE of the
    account's calls. The walk passes every call that sorts before the page and that the filters
    reject, and when those reject the calls that sort first it passes millions: a conversation
    of at least 226 s sorted by duration meets every shorter call first, and none of them
    matches (measured 3 to 16 s at 10M calls). Sorting costs at most SORTED_MATCHES rows."""
    column = query.sort[0].column
    if column not in tallies.LENGTH_FIELDS or total is None:
        return False
    if query.length_sorted is not None or query.pair_sorted is not None:  # a histogram places it
        return False
    if total > SORTED_MATCHES:
        return False
    size = int(conn.execute(_ACCOUNT_SIZE, {"account": scope.account_id}).scalar_one())
    return total * SORTED_SHARE <= size


_ACCOUNT_SIZE = select(func.coalesce(func.sum(call_counts.c.calls), 0)).where(
    call_counts.c.account_id == bindparam("account")
)


def _placed(
    conn: Connection, scope: Scope, query: CallQuery, total: int | None
) -> tuple[list[ColumnElement[bool]], int, int | None]:
    """Where the page lies, when a histogram of the first sort key can tell (`_histogram`):
    (conditions that narrow the list to the keys from the page's first call to its last, the
    page's offset among them, how many calls they hold). The page is then read there from a
    small offset: the walk along the index never passes the calls that sort before it, nor
    those the filters reject there. Without one: no condition, the query's offset, its total.

    A list sorted by duration or conversation under other filters too has no window, but is
    bounded by the shortest and longest calls of its type and status, so the walk along the
    index skips where none of them lies (missed calls last at most the ringing: sorted longest
    first, the walk passed every answered call)."""
    offset = query.offset
    if total is None:
        return [], offset, total
    if (found := _histogram(conn, scope, query, total)) is not None:
        histogram, between = found
        window = _window(conn, histogram, query.sort[0].descending, offset, query.per_page)
        if window is None:
            return [], offset, total
        (low, high), before, within = window
        if low == high and (tied := _tie(conn, scope.account_id, query, low, offset - before)):
            return tied
        return between(low, high), offset - before, within
    column = query.sort[0].column
    if column in tallies.LENGTH_FIELDS and (offset or not query.unfiltered):
        per_second = _seconds(scope.account_id, query, column)
        bounds = conn.execute(select(func.min(per_second.c.key), func.max(per_second.c.key)))
        low, high = bounds.one()
        if low is not None:
            first = high if query.sort[0].descending else low
            if head := _tied_head(conn, scope, query, first):
                return head, offset, None  # the page among the tie: never read from the end
            return [calls.c[column].between(low, high)], offset, total
    return _spanned(conn, scope.account_id, query), offset, total


def _tied_head(
    conn: Connection, scope: Scope, query: CallQuery, first: int
) -> list[ColumnElement[bool]]:
    """A page near the start of a list sorted by duration or conversation and then by another
    key, under filters no histogram reads (a period, a substring: `_histogram` places the
    others): when the calls up to the page's end all have the seconds `first` (the first any
    call of the list's types and statuses can have), that number as an equality, so that the
    index of the next key gives their order, as `_histogram` does for a tie (a 12-day period's
    missed calls, talk 0 s, sorted by start time: 2.3 s). No condition otherwise."""
    end = query.offset + query.per_page
    if end > DEFERRED_OFFSET or not query.sorted_further:
        return []
    tie = calls.c[query.sort[0].column] == first
    found = select(literal(1)).where(*_conditions(conn, scope, query), tie).limit(end).subquery()
    tied = conn.execute(select(func.count()).select_from(found)).scalar_one() == end
    return [tie] if tied else []


def _spanned(conn: Connection, account_id: int, query: CallQuery) -> list[ColumnElement[bool]]:
    """A list in id order filtered by a period lies between the lowest and the highest blocks of
    ids whose calls' start times may be in it (`id_spans`): the conditions that say so. Calls are
    stored as they end, so a period's calls have neighbouring ids, and its first page in id order
    is then found among a few thousand ids, not after every call before them (a day of a big
    account in time order: 10M index entries walked, measured 1.7 s). No condition when the
    blocks span every id (calls stored in no order of time: the walk then finds the period's
    calls everywhere) or when no period filters."""
    if query.sort[0].column != "id" or (query.started_from is None and query.started_to is None):
        return []
    sp = id_spans.c
    spans = []
    if query.started_from is not None:
        spans.append(sp.last_at >= query.started_from)
    if query.started_to is not None:
        spans.append(sp.first_at <= query.started_to)
    inside = and_(*spans)
    stmt = select(
        func.min(sp.block).filter(inside),
        func.max(sp.block).filter(inside),
        func.min(sp.block),
        func.max(sp.block),
    ).where(sp.account_id == account_id)
    low, high, first, last = conn.execute(stmt).one()
    if low is None or (low, high) == (first, last):  # no call there (unless stored since), or
        return []  # the period's blocks are all the account's: no narrower
    size = tallies.SPAN_BLOCK
    return [calls.c.id >= low * size, calls.c.id < (high + 1) * size]


#: The conditions on a call that its sort key lies within (lowest, highest) histogram keys.
Between = Callable[[int, int], list[ColumnElement[bool]]]


def _histogram(
    conn: Connection, scope: Scope, query: CallQuery, total: int
) -> tuple[Any, Between] | None:
    """The histogram (key, calls) of the list's first sort key, and the conditions a window of
    its keys stands for, when one holds exactly the list's calls (the whole account's, under
    filters the histogram keeps) and the walk to the page could be long:

    - sorted by duration or conversation, filtered by nothing but type, status and comparisons
      of that column, when filtered, paged past the first page or sorted by another key next:
      its seconds (`length_counts`). A page that lies among calls of one number of seconds is
      then read with that number as an equality, so that the index of the next key gives their
      order: 3M missed calls talked 0 s, and sorting them by start time took 3 s;
    - sorted by start time, filtered by nothing but type, status and a period, paged deep: its
      quarter-hours (`call_rollups`; the partial ones at a period's ends counted from the calls);
    - sorted by id, filtered by nothing but type and status, paged deep: its blocks of ids
      (`id_counts`).

    Deep: past DEFERRED_OFFSET calls from the nearer end (a page in the second half is read
    backwards from the last call: `search`)."""
    if not scope.whole:
        return None
    column, offset, then = query.sort[0].column, query.offset, query.sorted_further
    histogram = None
    if query.length_sorted is not None and (offset or not query.unfiltered or then):
        histogram = _seconds(scope.account_id, query, column)
    elif query.pair_sorted is not None:
        lp = length_pairs.c
        histogram = _per_key(lp[column], lp.calls, *_pairs_of(scope.account_id, query))
    if histogram is not None:
        seconds = calls.c[column]
        # With a next key, a page among calls of equal seconds: in the order of its index.
        return histogram, lambda lo, hi: [_keys(seconds, lo, hi, exact=then)]
    if min(offset, total - offset - query.per_page) < DEFERRED_OFFSET:
        return None
    period = tallies.Period.of(query.started_from, query.started_to)
    if column == "started_at" and query.counted_by_period and period is not None:
        parts = period_buckets(conn.dialect.name, scope.account_id, query, period)
        return _per_key(parts.c.bucket, parts.c.calls), lambda lo, hi: [
            calls.c.started_at >= tallies.start_of(lo),
            calls.c.started_at < tallies.start_of(hi + 1),
        ]
    if column == "id" and query.counted_by_type_and_status:
        ic = id_counts.c
        blocks = _per_key(
            ic.block,
            ic.calls,
            ic.account_id == scope.account_id,
            *type_and_status(id_counts, query),
        )
        size = tallies.ID_BLOCK
        return blocks, lambda lo, hi: [calls.c.id >= lo * size, calls.c.id < (hi + 1) * size]
    return None


def _per_key(key: Any, calls_of: Any, *conditions: ColumnElement[bool]) -> Any:
    """A histogram: (key, calls) for each key that holds calls."""
    summed = cast(func.sum(calls_of), BigInteger)
    return (
        select(key.label("key"), summed.label("calls"))
        .where(*conditions)
        .group_by(key)
        .having(summed > 0)
        .subquery()
    )


def _seconds(account_id: int, query: CallQuery, name: str) -> Any:
    """The histogram of `name` (duration or conversation): `_lengths_of`'s rows by seconds."""
    lc = length_counts.c
    return _per_key(lc.seconds, lc.calls, *_lengths_of(account_id, query, name))


def _pairs_of(account_id: int, query: CallQuery) -> list[ColumnElement[bool]]:
    """The `length_pairs` rows that count the account's calls of the query's types and
    statuses, under its comparisons of the duration and the conversation."""
    lp = length_pairs.c
    conditions = [lp.account_id == account_id, *type_and_status(length_pairs, query)]
    conditions += [_compared(lp[name], compared) for name, compared in query.numbers.items()]
    return conditions


def _lengths_of(account_id: int, query: CallQuery, name: str) -> list[ColumnElement[bool]]:
    """The `length_counts` rows of `name` (duration or conversation) that count the account's
    calls of the query's types and statuses, under its comparisons of that column if any."""
    lc = length_counts.c
    conditions = [
        lc.account_id == account_id,
        lc.field == tallies.LENGTH_FIELDS.index(name),
        *type_and_status(length_counts, query),
    ]
    if name in query.numbers:
        conditions.append(_compared(lc.seconds, query.numbers[name]))
    return conditions


def _tie(
    conn: Connection, account_id: int, query: CallQuery, seconds: int, offset: int
) -> tuple[list[ColumnElement[bool]], int, int] | None:
    """A page among the calls of one number of seconds of the first sort key (duration or
    conversation), sorted next by the other one: placed among them by the other's seconds too
    (`length_pairs`), as `_placed` places it. The next key's index walked alone passes every
    call with other seconds of the first: sorted by conversation then longest first, the 3M
    missed calls (0 s of talk, the shortest durations) came after every answered one (26 s)."""
    if query.length_sorted is None and query.pair_sorted is None:
        return None  # not sorted by duration or conversation first (or by them in time)
    first, then = query.sort[0], query.sort[1]  # then: at least the id
    if then.column not in tallies.LENGTH_FIELDS:
        return None
    lp = length_pairs.c
    among = [*_pairs_of(account_id, query), lp[first.column] == seconds]
    window = _window(conn, _per_key(lp[then.column], lp.calls, *among), then.descending, offset,
                     query.per_page)  # fmt: skip
    if window is None:
        return None
    (low, high), before, within = window
    tied = [calls.c[first.column] == seconds, _keys(calls.c[then.column], low, high, exact=True)]
    return tied, offset - before, within


def _keys(column: ColumnElement[int], low: int, high: int, *, exact: bool) -> ColumnElement[bool]:
    """`column` within [low, high]; an equality when they are one key and `exact` (the planner
    then drops the column from the order, and the index of the next sort key gives it)."""
    return column == low if exact and low == high else column.between(low, high)


def _window(
    conn: Connection, histogram: Any, descending: bool, offset: int, per_page: int
) -> tuple[tuple[int, int], int, int] | None:
    """The keys of the histogram from the page's first call to its last (the page: `per_page`
    calls after `offset`, in the keys' order, `descending` or not): ((lowest, highest key), the
    calls before them, the calls they hold); None when the histogram holds no such page (a
    call stored or removed since the total was counted)."""
    first = histogram.c.key.desc() if descending else histogram.c.key
    upto = cast(func.sum(histogram.c.calls).over(order_by=first), BigInteger)
    running = select(histogram.c.key, histogram.c.calls, upto.label("upto")).subquery()
    stmt = (
        select(running.c.key, running.c.calls, running.c.upto)
        .where(running.c.upto > offset)
        .order_by(running.c.upto)
        .limit(per_page)  # each key holds a call at least
    )
    rows = conn.execute(stmt).all()
    if not rows:
        return None
    end = offset + per_page
    last = next((row for row in rows if row.upto >= end), rows[-1])
    before = rows[0].upto - rows[0].calls
    low, high = sorted((rows[0].key, last.key))
    return (low, high), before, last.upto - before


def stream(conn: Connection, scope: Scope, query: CallQuery) -> Iterator[Sequence[AnyRow]]:
    """Every call the query matches (pages aside), in its order, in batches of EXPORT_BATCH read
    from a server-side cursor: an export of any size in constant memory."""
    within = _spanned(conn, scope.account_id, query)
    result = conn.execution_options(stream_results=True, yield_per=EXPORT_BATCH).execute(
        _ordered(conn, scope, query, within=within)
    )
    yield from result.partitions()


#: Rows per batch of an export.
EXPORT_BATCH = 1000


def list_page(
    conn: Connection, scope: Scope, query: CallQuery
) -> tuple[int, Sequence[AnyRow], dict[int, list[AnyRow]]]:
    """What a list shows: the exact total, the page's calls and their integration rows. A page
    past the end needs no rows (and never an absurd OFFSET)."""
    total = count(conn, scope, query)
    rows = search(conn, scope, query, total) if query.offset < total else []
    return total, rows, integrations_for(conn, scope.account_id, (row.id for row in rows))


def get(conn: Connection, scope: Scope, call_pk: int) -> AnyRow | None:
    stmt = select(*CALL_COLUMNS).where(*scope.conditions(), calls.c.id == call_pk)
    return conn.execute(stmt).first()


def integrations_for(
    conn: Connection, account_id: int, call_pks: Iterable[int]
) -> dict[int, list[AnyRow]]:
    """The integration rows of many calls of the account, in one query."""
    pks = list(call_pks)
    found: dict[int, list[AnyRow]] = {pk: [] for pk in pks}
    if not pks:
        return found
    if conn.dialect.name == "postgresql":  # every list page asks: one statement built once
        rows = _INTEGRATIONS_OF_CALLS.rows(conn, {"account": account_id, "calls": pks})
    else:
        rows = [
            row
            for chunk in in_chunks(pks)
            for row in conn.execute(
                _integrations(call_integrations.c.call_history_id.in_(chunk)),
                {"account": account_id},
            )
        ]
    for row in rows:
        found[row.call_history_id].append(row)
    return found


def _integrations(of_calls: ColumnElement[bool]) -> Any:
    ci = call_integrations.c
    return (
        select(call_integrations)
        .where(ci.account_id == bindparam("account"), of_calls)
        .order_by(ci.call_history_id, ci.id)
    )


#: Half the CPU of building the statement for each page (measured 126 vs 272 µs a page): its
#: SQL and cache key are made once. The calls come as one array parameter.
_INTEGRATIONS_OF_CALLS = Prepared(
    _integrations(
        call_integrations.c.call_history_id == any_(bindparam("calls", type_=ARRAY(BigInteger)))
    )
)


def _row_values(account_id: int, call: NewCall, now: datetime) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "call_id": call.call_id,
        "pbx_call_id": call.pbx_call_id,
        "started_at": call.started_at.replace(microsecond=0),  # filters compare whole seconds
        "answered_at": call.answered_at,
        "ended_at": call.ended_at,
        "src": call.src,
        "dst": call.dst,
        "external_number": call.external_number,
        "duration": call.duration,
        "conversation": call.conversation,
        "type": int(call.type),
        "status": int(call.status),
        "disposition": call.disposition,
        "legs": call.legs,
        "recording": call.recording,
        "created_at": now,
        "updated_at": now,
    }


def insert_calls(conn: Connection, account_id: int, new_calls: Sequence[NewCall]) -> dict[str, int]:
    """Store calls the account does not have yet (by call_id); returns {call_id: id} of those
    created. Concurrent inserts of one call_id are safe: the unique index decides, the loser skips.
    """
    if not new_calls:
        return {}
    now = utcnow()
    rows = [_row_values(account_id, c, now) for c in new_calls]
    _lock_call_ids(conn, account_id, [row["call_id"] for row in rows])
    if bulk.insertable(conn, rows):
        inserted = bulk.insert(
            conn, calls, rows, conflict=["account_id", "call_id"],
            returning=["id", "call_id", "type"],
        )  # fmt: skip
    else:
        # executemany: SQLAlchemy's "insertmanyvalues" sends multi-row INSERTs sized to the
        # driver's limits and compiles the statement once.
        stmt = (
            dialect_insert(conn, calls)
            .on_conflict_do_nothing(index_elements=["account_id", "call_id"])
            .returning(calls.c.id, calls.c.call_id, calls.c.type)
        )
        inserted = conn.execute(stmt, rows).all()
    created: dict[str, int] = {}
    external: list[int] = []
    for row in inserted:
        created[row.call_id] = row.id
        if row.type != CallType.INTERNAL:
            external.append(row.id)
    by_call_id = {row["call_id"]: row for row in rows}
    if len(created) >= bulk.MIN_ROWS:  # counted in the database
        started = (by_call_id[call_id]["started_at"] for call_id in created)
        tallies.add_stored(conn, account_id, list(created.values()), started)
    else:  # a few calls (the AMI feed's): fewer statements tallied here
        tally = tallies.Tally()
        for call_id, pk in created.items():
            tally.count({**by_call_id[call_id], "id": pk}, +1)
        tallies.add(conn, account_id, tally)
    _enqueue_for_crms(conn, account_id, external, now)
    return created


#: Lock buckets per account: a batch takes at most this many advisory locks, however many calls
#: it inserts (one lock per call exhausted PostgreSQL's lock table: "out of shared memory").
LOCK_BUCKETS = 64


def _lock_call_ids(conn: Connection, account_id: int, call_ids: list[str]) -> None:
    """PostgreSQL: take a transaction lock per bucket of call_ids, in one global order, before
    inserting. Two requests inserting the same new calls in different orders would otherwise wait
    on each other's uncommitted unique-index entries crosswise and deadlock; this way the second
    waits for the first on the first bucket they share, and then finds its calls stored. Ids are
    still given in the request's order. (SQLite has a single writer.)"""
    if conn.dialect.name != "postgresql" or not call_ids:
        return
    conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(CAST(:base AS bigint) + b) FROM ("
            " SELECT DISTINCT hashtext(k) & :mask AS b FROM unnest(CAST(:keys AS text[])) AS k"
            " ORDER BY b) AS ordered"
        ),
        {
            "base": account_id * LOCK_BUCKETS,
            "mask": LOCK_BUCKETS - 1,
            "keys": sorted(set(call_ids)),
        },
    )


def _enqueue_for_crms(
    conn: Connection, account_id: int, call_pks: list[int], now: datetime
) -> None:
    """A `pending` sync row per connected CRM for each new outside call, in the caller's
    transaction: a call is never stored without being queued (internal calls are not pushed)."""
    if not call_pks:
        return
    connected = conn.execute(
        select(integrations.c.id, integrations.c.integration_type).where(
            integrations.c.account_id == account_id
        )
    ).all()
    rows = [
        {
            "account_id": account_id,
            "call_history_id": pk,
            "integration_id": crm.id,
            "integration_type": crm.integration_type,
            "status": "pending",
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        for crm in connected
        for pk in call_pks
    ]
    if rows:
        conn.execute(call_integrations.insert(), rows)


def update_calls(
    conn: Connection, account_id: int, changes: Sequence[tuple[AnyRow, NewCall]]
) -> None:
    """Overwrite stored calls (rows as read by this module) with their re-merged values."""
    if not changes:
        return
    now = utcnow()
    params = []
    tally = tallies.Tally()
    for old, call in changes:
        values = _row_values(account_id, call, now)
        del values["account_id"], values["call_id"], values["created_at"]
        params.append({"pk": old.id, **values})
        tally.count(old, -1)
        tally.count({**values, "id": old.id}, +1)
    if bulk.enabled(conn, params):
        bulk.update(conn, calls, account_id, params)
    else:
        stmt = (
            update(calls)
            .where(calls.c.id == bindparam("pk"), calls.c.account_id == account_id)
            .values({name: bindparam(name) for name in params[0] if name != "pk"})
        )
        conn.execute(stmt, params)
    tallies.add(conn, account_id, tally)


def changed_fields(old: AnyRow, call: NewCall) -> set[str]:
    """The stored fields a re-merged call would change."""
    new = _row_values(0, call, datetime.min)
    return {name for name in STORED_FIELDS if getattr(old, name) != new[name]}


#: What a re-merge may change (ids, account and timestamps of the row aside).
STORED_FIELDS = (
    "pbx_call_id", "started_at", "answered_at", "ended_at", "src", "dst", "external_number",
    "duration", "conversation", "type", "status", "disposition", "legs", "recording",
)  # fmt: skip


def calls_page(
    conn: Connection, account_id: int, after_id: int, since: datetime | None, limit: int
) -> Sequence[AnyRow]:
    """The account's calls by id after `after_id` (started at or after `since`), `limit` of them."""
    stmt = select(*CALL_COLUMNS).where(calls.c.account_id == account_id, calls.c.id > after_id)
    if since is not None:
        stmt = stmt.where(calls.c.started_at >= since)
    return conn.execute(stmt.order_by(calls.c.id).limit(limit)).all()


def get_many_by_call_id(
    conn: Connection, account_id: int, call_ids: Iterable[str]
) -> dict[str, AnyRow]:
    ids = list(dict.fromkeys(call_ids))
    found: dict[str, AnyRow] = {}
    for among in one_of(conn, calls.c.call_id, ids):
        stmt = select(*CALL_COLUMNS).where(calls.c.account_id == account_id, among)
        found.update({row.call_id: row for row in conn.execute(stmt)})
    return found


def add_integration(
    conn: Connection,
    account_id: int,
    call_pk: int,
    integration_type: str,
    status: str,
    error_message: str | None = None,
) -> int:
    now = utcnow()
    stmt = call_integrations.insert().values(
        account_id=account_id,
        call_history_id=call_pk,
        integration_type=integration_type,
        status=status,
        error_message=error_message,
        created_at=now,
        updated_at=now,
    )
    return int(conn.execute(stmt.returning(call_integrations.c.id)).scalar_one())


def has_recording(conn: Connection, scope: Scope, recording: str) -> bool:
    """Whether a call the scope sees links to this recording path."""
    stmt = select(calls.c.id).where(*scope.conditions(), calls.c.recording == recording).limit(1)
    return conn.execute(stmt).first() is not None


def linked_by_any(conn: Connection, account_ids: Sequence[int], recording: str) -> bool:
    """Whether a call of any of these accounts links to this recording path."""
    stmt = (
        select(calls.c.id)
        .where(calls.c.account_id.in_(account_ids), calls.c.recording == recording)
        .limit(1)
    )
    return conn.execute(stmt).first() is not None


def clear_recordings(conn: Connection, account_id: int, call_pks: Sequence[int]) -> None:
    if call_pks:
        conn.execute(
            update(calls)
            .where(calls.c.account_id == account_id, calls.c.id.in_(call_pks))
            .values(recording=None, updated_at=utcnow())
        )


def recordings_started_before(
    conn: Connection, account_id: int, before: datetime, after_pk: int, limit: int
) -> list[tuple[int, str]]:
    """(id, recording) of the account's calls that started before `before` and still link to a
    recording, in id order after `after_pk` (for batching)."""
    stmt = (
        select(calls.c.id, calls.c.recording)
        .where(
            calls.c.account_id == account_id,
            calls.c.started_at < before,
            calls.c.recording.is_not(None),
            calls.c.id > after_pk,
        )
        .order_by(calls.c.id)
        .limit(limit)
    )
    return [(int(row.id), str(row.recording)) for row in conn.execute(stmt)]
