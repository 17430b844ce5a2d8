"""Every SQL statement about connected CRMs and the sync queue (call_integrations).

Workers claim pending rows with a lease (owner + expiry) in a short transaction, push them with no
transaction open, then settle them only if they still hold the lease. A worker that dies loses its
lease when it expires and the rows are claimed again; on PostgreSQL `FOR UPDATE SKIP LOCKED` lets
concurrent workers claim disjoint rows without waiting on each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, update

from callhistory.schema import call_integrations, calls, integrations
from callhistory.store import CALL_COLUMNS, AnyRow, utcnow

ci = call_integrations


def connect(
    conn: Connection,
    account_id: int,
    integration_type: str,
    base_url: str,
    auth: str,
    sealed: str,
    access_expires_at: datetime | None,
) -> int:
    """Connect (or reconnect) the account's CRM; returns the integration id."""
    now = utcnow()
    values = {
        "base_url": base_url,
        "auth": auth,
        "secrets": sealed,
        "access_expires_at": access_expires_at,
        "updated_at": now,
    }
    existing = find(conn, account_id, integration_type)
    if existing is not None:
        conn.execute(update(integrations).where(integrations.c.id == existing.id).values(values))
        return int(existing.id)
    stmt = integrations.insert().values(
        account_id=account_id, integration_type=integration_type, created_at=now, **values
    )
    return int(conn.execute(stmt.returning(integrations.c.id)).scalar_one())


def find(conn: Connection, account_id: int, integration_type: str) -> AnyRow | None:
    return conn.execute(
        select(integrations).where(
            integrations.c.account_id == account_id,
            integrations.c.integration_type == integration_type,
        )
    ).first()


def disconnect(conn: Connection, account_id: int, integration_type: str) -> bool:
    """Forget the CRM; its queue rows stay as history, unlinked (pending ones are dropped)."""
    found = find(conn, account_id, integration_type)
    if found is None:
        return False
    mine = (ci.c.account_id == account_id, ci.c.integration_id == found.id)
    conn.execute(delete(ci).where(*mine, ci.c.status == "pending"))
    conn.execute(update(ci).where(*mine).values(integration_id=None))
    conn.execute(delete(integrations).where(integrations.c.id == found.id))
    return True


def get(conn: Connection, integration_id: int) -> AnyRow:
    return conn.execute(select(integrations).where(integrations.c.id == integration_id)).one()


def any_integration(conn: Connection) -> bool:
    return conn.execute(select(integrations.c.id).limit(1)).first() is not None


def all_integrations(conn: Connection) -> list[AnyRow]:
    return list(conn.execute(select(integrations).order_by(integrations.c.id)).all())


def lock_integration(conn: Connection, integration_id: int) -> AnyRow:
    """Read the integration holding its row lock until the transaction ends (a no-op UPDATE
    locks on PostgreSQL and takes the write lock on SQLite), so token refreshes never overlap."""
    conn.execute(
        update(integrations)
        .where(integrations.c.id == integration_id)
        .values(updated_at=integrations.c.updated_at)
    )
    return conn.execute(select(integrations).where(integrations.c.id == integration_id)).one()


def save_secrets(
    conn: Connection, integration_id: int, sealed: str, access_expires_at: datetime | None
) -> None:
    conn.execute(
        update(integrations)
        .where(integrations.c.id == integration_id)
        .values(secrets=sealed, access_expires_at=access_expires_at, updated_at=utcnow())
    )


def claim(
    conn: Connection,
    integration: AnyRow,
    owner: str,
    now: datetime,
    *,
    lease: timedelta,
    settle: timedelta,
    limit: int,
) -> list[AnyRow]:
    """Lease up to `limit` due rows of the integration (oldest first) whose call has not changed
    for `settle` (more legs may still come); returns them with their call's columns."""
    free = or_(ci.c.lease_until.is_(None), ci.c.lease_until < now)
    due = or_(ci.c.next_attempt_at.is_(None), ci.c.next_attempt_at <= now)
    account = ci.c.account_id == integration.account_id
    candidates = (
        select(ci.c.id)
        .join(calls, _call_of_row)
        .where(
            account,
            ci.c.status == "pending",
            ci.c.integration_id == integration.id,
            due,
            free,
            calls.c.updated_at <= now - settle,
        )
        .order_by(ci.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=ci)
    )
    until = now + lease
    for _ in range(3):
        ids = list(conn.execute(candidates).scalars())
        if not ids:
            return []
        # Re-checked here: without SKIP LOCKED (SQLite) another worker may have leased them.
        leased = conn.execute(
            update(ci)
            .where(account, ci.c.id.in_(ids), ci.c.status == "pending", free)
            .values(lease_owner=owner, lease_until=until)
        ).rowcount
        if leased:
            break
    stmt = (
        select(ci.c.id.label("row_id"), ci.c.attempts, calls.c.account_id, *CALL_COLUMNS)
        .join(calls, _call_of_row)
        .where(account, ci.c.id.in_(ids), ci.c.lease_owner == owner, ci.c.lease_until == until)
        .order_by(ci.c.id)
    )
    return list(conn.execute(stmt).all())


#: A sync row's call: joined on the account too, so that on Citus both sides are one shard.
_call_of_row = and_(calls.c.account_id == ci.c.account_id, calls.c.id == ci.c.call_history_id)


def _mine(account_id: int, owner: str, row_ids: Sequence[int]) -> Any:
    return and_(
        ci.c.account_id == account_id,
        ci.c.id.in_(row_ids),
        ci.c.lease_owner == owner,
        ci.c.status == "pending",
    )


def settle(
    conn: Connection,
    account_id: int,
    owner: str,
    results: Sequence[tuple[int, str | None, str | None]],
) -> None:
    """(row id, external id, error): synced without an error, failed with the CRM's message."""
    now = utcnow()
    released = {"lease_owner": None, "lease_until": None, "updated_at": now}
    for row_id, external_id, error in results:
        values = (
            {"status": "synced", "external_id": external_id, "error_message": None}
            if error is None
            else {"status": "failed", "error_message": error[:2000]}
        )
        conn.execute(
            update(ci)
            .where(_mine(account_id, owner, [row_id]))
            .values(attempts=ci.c.attempts + 1, **values, **released)
        )


def retry_later(
    conn: Connection,
    account_id: int,
    owner: str,
    row_ids: Sequence[int],
    error: str,
    next_attempt_at: datetime,
    budget: int,
) -> None:
    """A transient failure: try again at `next_attempt_at`, or fail once the budget is spent."""
    now = utcnow()
    released = {"lease_owner": None, "lease_until": None, "updated_at": now}
    conn.execute(
        update(ci)
        .where(_mine(account_id, owner, row_ids), ci.c.attempts + 1 >= budget)
        .values(
            status="failed",
            attempts=ci.c.attempts + 1,
            error_message=f"gave up after {budget} attempts: {error}"[:2000],
            **released,
        )
    )
    conn.execute(
        update(ci)
        .where(_mine(account_id, owner, row_ids))
        .values(
            attempts=ci.c.attempts + 1,
            next_attempt_at=next_attempt_at,
            error_message=error[:2000],
            **released,
        )
    )


def find_row(conn: Connection, account_id: int, call_pk: int, row_id: int) -> AnyRow | None:
    """A sync row of the account's call."""
    return conn.execute(
        select(ci)
        .join(calls, _call_of_row)
        .where(ci.c.account_id == account_id, ci.c.id == row_id, ci.c.call_history_id == call_pk)
    ).first()


def requeue(conn: Connection, account_id: int, row_id: int) -> None:
    """Put a failed row back in the queue, as if new."""
    conn.execute(
        update(ci)
        .where(ci.c.account_id == account_id, ci.c.id == row_id, ci.c.status == "failed")
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=None,
            error_message=None,
            lease_owner=None,
            lease_until=None,
            updated_at=utcnow(),
        )
    )


def queue_counts(conn: Connection, integration: AnyRow) -> dict[str, int]:
    rows = conn.execute(
        select(ci.c.status, func.count())
        .where(ci.c.account_id == integration.account_id, ci.c.integration_id == integration.id)
        .group_by(ci.c.status)
    ).all()
    return {str(status): int(n) for status, n in rows}


def resync(conn: Connection, account_id: int, changed: Sequence[tuple[int, bool]]) -> int:
    """Calls (id, internal now?) whose pushed fields changed: queue each outside call again for
    every connected CRM (as new: a row per CRM, pending, no attempts); drop what is still pending
    for a call that became internal. Returns how many rows were queued."""
    if not changed:
        return 0
    dropped = [pk for pk, internal in changed if internal]
    if dropped:
        conn.execute(
            delete(ci).where(
                ci.c.account_id == account_id,
                ci.c.call_history_id.in_(dropped),
                ci.c.status == "pending",
            )
        )
    pushed = [pk for pk, internal in changed if not internal]
    connected = conn.execute(
        select(integrations.c.id, integrations.c.integration_type).where(
            integrations.c.account_id == account_id
        )
    ).all()
    if not pushed or not connected:
        return 0
    now = utcnow()
    existing = {
        (row.call_history_id, row.integration_id)
        for row in conn.execute(
            select(ci.c.call_history_id, ci.c.integration_id).where(
                ci.c.account_id == account_id, ci.c.call_history_id.in_(pushed)
            )
        )
    }
    conn.execute(
        update(ci)
        # rows of a disconnected CRM (no integration) are history: nothing can send them again
        .where(
            ci.c.account_id == account_id,
            ci.c.call_history_id.in_(pushed),
            ci.c.integration_id.is_not(None),
        )
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=None,
            error_message=None,
            lease_owner=None,
            lease_until=None,
            updated_at=now,
        )
    )
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
        for pk in pushed
        for crm in connected
        if (pk, crm.id) not in existing
    ]
    if rows:
        conn.execute(ci.insert(), rows)
    return len(pushed) * len(connected)
