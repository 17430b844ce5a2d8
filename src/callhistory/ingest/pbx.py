"""CDR legs → stored calls: the one path the CSV import and the AMI feed share.

Each leg is kept (call_legs); each call affected by new legs is re-merged from all its legs and
inserted or updated, so a leg that arrives later (next batch, next import, after a reconnect)
updates its call and never creates a second one. Legs already seen are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from callhistory import cdrstore, store
from callhistory.classify import PbxConfig
from callhistory.ingest.cdr import Cdr
from callhistory.ingest.merge import merge


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


def store_legs(
    conn: Connection, account_id: int, legs: Sequence[Cdr], config: PbxConfig, tz: ZoneInfo
) -> Outcome:
    """Store a batch of legs (any order, any calls) in the caller's transaction."""
    unique = {leg.leg_key: leg for leg in legs}
    known = cdrstore.known_leg_keys(conn, account_id, list(unique))
    new_legs = [leg for key, leg in unique.items() if key not in known]
    outcome = Outcome(duplicate_legs=len(legs) - len(new_legs))
    if not new_legs:
        return outcome

    by_call: dict[str, list[Cdr]] = {}
    for leg in new_legs:
        by_call.setdefault(leg.call_key, []).append(leg)
    stored = cdrstore.legs_of(conn, account_id, list(by_call))
    merged = {
        key: merge(account_id, [*stored.get(key, []), *fresh], config, tz)
        for key, fresh in by_call.items()
    }
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
        conn, account_id, [(ids[merged[leg.call_key].call_id], leg) for leg in new_legs]
    )
    outcome.created = len(created)
    outcome.updated = len(merged) - len(created)
    return outcome
