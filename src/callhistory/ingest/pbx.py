"""CDR legs → stored calls: the one path the CSV import and the AMI feed share.

Each leg is kept (call_legs); each call affected by new legs is re-merged from all its legs and
inserted or updated, so a leg that arrives later (next batch, next import, after a reconnect)
updates its call and never creates a second one. Legs already seen are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine

from callhistory import accounts, bulk, cdrstore, crmstore, store
from callhistory.classify import PbxConfig
from callhistory.ingest.cdr import Cdr
from callhistory.ingest.merge import merge
from callhistory.models import CallType, NewCall, derive_call_id
from callhistory.recordings import safe_path


@dataclass(frozen=True)
class Layout:
    """What merging an account's legs needs: its PBX layout, its timezone, and its recordings
    root (to link a recording the CDR does not name only when the file is there)."""

    config: PbxConfig
    tz: ZoneInfo
    recordings: Path | None = None

    @classmethod
    def load(cls, conn: Connection, account_id: int, recordings_base: Path | None) -> Layout:
        config, tz = accounts.pbx_settings(conn, account_id)
        root = None
        if recordings_base is not None:
            root = accounts.recordings_root(conn, recordings_base, account_id)
        return cls(config, tz, root)

    def recording_exists(self, relative: str) -> bool:
        return (
            self.recordings is not None
            and safe_path(relative)
            and (self.recordings / relative).is_file()
        )


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    duplicate_legs: int = 0

    def __iadd__(self, other: Outcome) -> Outcome:
        self.created += other.created
        self.updated += other.updated
        self.duplicate_legs += other.duplicate_legs
        return self


@dataclass
class Merged:
    """A batch of legs merged into calls: what `write` stores."""

    new_legs: list[Cdr]  # the legs not stored yet, in the batch's order
    calls: dict[str, NewCall]  # by call key: each call a new leg belongs to, from all its legs
    duplicate_legs: int  # legs of the batch already stored (or twice in it)
    #: `new_legs` as `write` stores them (`cdrstore.leg_rows`): all a writer needs of them, made
    #: where the batch is merged (the import's reading process or thread, not its writer).
    leg_rows: list[cdrstore.LegRow]

    def to_write(self) -> Merged:
        """What a writer in another process needs: the batch without its legs (their rows)."""
        return Merged([], self.calls, self.duplicate_legs, self.leg_rows)


def merge_batch(
    conn: Connection,
    account_id: int,
    legs: Sequence[Cdr],
    layout: Layout,
    unwritten: Iterable[Cdr] = (),
) -> Merged:
    """Merge a batch of legs (any order, any calls) with their calls' stored legs. `unwritten`:
    legs an earlier batch is storing but may not have committed yet (the import reads a batch
    while it writes the one before), taken as stored."""
    unique = {leg.leg_key: leg for leg in legs}
    call_keys = {leg.call_key: 0 for leg in legs}
    stored = cdrstore.stored_legs(conn, account_id, list(call_keys))
    for leg in unwritten:
        if leg.call_key in call_keys and leg.leg_key not in stored.keys:
            stored.keys.add(leg.leg_key)
            stored.legs.setdefault(leg.call_key, []).append(leg)
    new_legs = [leg for key, leg in unique.items() if key not in stored.keys]
    by_call: dict[str, list[Cdr]] = {}
    for leg in new_legs:
        by_call.setdefault(leg.call_key, []).append(leg)
    calls = {
        key: merge(
            account_id,
            [*stored.legs.get(key, []), *fresh],
            layout.config,
            layout.tz,
            layout.recording_exists,
        )
        for key, fresh in by_call.items()
    }
    return Merged(new_legs, calls, len(legs) - len(new_legs), cdrstore.leg_rows(new_legs))


def write(conn: Connection, account_id: int, batch: Merged) -> Outcome:
    """Store merged calls and their new legs in the caller's transaction: a call already stored
    is updated, another is inserted."""
    outcome = Outcome(duplicate_legs=batch.duplicate_legs)
    if not batch.leg_rows:
        return outcome
    bulk.plan_generically(conn)
    merged = batch.calls
    existing = store.get_many_by_call_id(conn, account_id, [c.call_id for c in merged.values()])
    created = store.insert_calls(
        conn, account_id, [c for c in merged.values() if c.call_id not in existing]
    )
    # A call another writer created since we looked: read it, then update it like the others.
    raced = [
        c.call_id for c in merged.values() if c.call_id not in existing and c.call_id not in created
    ]
    existing.update(store.get_many_by_call_id(conn, account_id, raced))
    store.update_calls(
        conn,
        account_id,
        [(existing[c.call_id], c) for c in merged.values() if c.call_id in existing],
    )
    ids = {call_id: row.id for call_id, row in existing.items()} | created
    cdrstore.insert_legs(
        conn, account_id, [(ids[merged[row[0]].call_id], row) for row in batch.leg_rows]
    )
    outcome.created = len(created)
    outcome.updated = len(merged) - len(created)
    return outcome


def store_legs(conn: Connection, account_id: int, legs: Sequence[Cdr], layout: Layout) -> Outcome:
    """Store a batch of legs (any order, any calls) in the caller's transaction."""
    return write(conn, account_id, merge_batch(conn, account_id, legs, layout))


#: What a CRM is sent of a call (see crm/amocrm.py); a change re-queues its sync.
PUSHED_FIELDS = frozenset(
    {"type", "status", "disposition", "src", "dst", "external_number", "conversation",
     "recording", "started_at"}
)  # fmt: skip


@dataclass
class Reclassified:
    examined: int = 0
    changed: int = 0
    requeued: int = 0


def reclassify(
    engine: Engine,
    account_id: int,
    *,
    since: datetime | None = None,
    recordings_base: Path | None = None,
    batch: int = 1000,
    progress: Callable[[Reclassified], None] | None = None,
) -> Reclassified:
    """Re-merge the account's Asterisk calls (started at or after `since`, UTC) from their stored
    legs with its current layout: type, status, dst, conversation... change in place (same ids),
    the per-account counters follow, and a call whose pushed fields changed is queued for its
    CRMs again. One transaction per batch: an interrupted run keeps what it did and can be
    started again."""
    with engine.connect() as conn:
        layout = Layout.load(conn, account_id, recordings_base)
    done = Reclassified()
    after_id = 0
    while True:
        with engine.begin() as conn:
            rows = store.calls_page(conn, account_id, after_id, since, batch)
            if not rows:
                break
            after_id = rows[-1].id
            legs = cdrstore.legs_of(
                conn, account_id, [r.pbx_call_id for r in rows if r.pbx_call_id]
            )
            changes = []
            pushed = []
            for row in rows:
                found = legs.get(row.pbx_call_id or "")
                if not found or row.call_id != derive_call_id(account_id, row.pbx_call_id):
                    continue  # a call of the JSON ingest: nothing to re-merge
                done.examined += 1
                call = merge(account_id, found, layout.config, layout.tz, layout.recording_exists)
                changed = store.changed_fields(row, call)
                if changed:
                    changes.append((row, call))
                if changed & PUSHED_FIELDS:
                    pushed.append((row.id, call.type is CallType.INTERNAL))
            store.update_calls(conn, account_id, changes)
            done.requeued += crmstore.resync(conn, account_id, pushed)
            done.changed += len(changes)
        if progress:
            progress(done)
    return done
