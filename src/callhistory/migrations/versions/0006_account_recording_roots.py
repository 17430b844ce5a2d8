"""Recordings: each account's own root.

Until now every account's recording paths were resolved in one shared RECORDINGS_DIR. Now an
account's paths resolve only inside its own root: its `recordings_dir`, else RECORDINGS_DIR/<id>.
Calls already stored keep working for their own account:
- when a single account links recordings (a single-tenant install, often RECORDINGS_DIR is the
  PBX's monitor directory), that account's root becomes the old shared directory, files untouched;
- when several do, each file moves to RECORDINGS_DIR/<account id>/<path> of the account whose call
  linked it first; later links to the same path from other accounts (one account naming another's
  file, the hole this closes) are cleared and logged.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

log = logging.getLogger("callhistory.migrations")


def _legacy_root() -> Path:
    config = op.get_context().config
    root = config.attributes.get("recordings_root") if config is not None else None
    if root is None:
        from callhistory.config import Settings

        root = Settings().recordings_root
    return Path(root).resolve()


def _move(root: Path, account_id: int, relative: str) -> None:
    source, target = root / relative, root / str(account_id) / relative
    if ".." in relative.split("/") or not source.is_file() or target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("recordings_dir", sa.String(1024)))

    conn = op.get_bind()
    links = conn.execute(
        sa.text(
            "SELECT account_id, recording, min(id) AS first FROM calls"
            " WHERE recording IS NOT NULL GROUP BY account_id, recording ORDER BY first"
        )
    ).all()
    if not links:
        return
    root = _legacy_root()
    linking = {int(row.account_id) for row in links}
    if len(linking) == 1:
        conn.execute(
            sa.text("UPDATE accounts SET recordings_dir = :root WHERE id = :id"),
            {"root": str(root), "id": linking.pop()},
        )
        return
    owner: dict[str, int] = {}
    for row in links:  # ordered by the first call linking each (account, path)
        account_id, relative = int(row.account_id), str(row.recording)
        first = owner.setdefault(relative, account_id)
        if first == account_id:
            _move(root, account_id, relative)
            continue
        log.warning(
            "account %s linked %s, a recording of account %s: link cleared",
            account_id,
            relative,
            first,
        )
        conn.execute(
            sa.text("UPDATE calls SET recording = NULL WHERE account_id = :a AND recording = :r"),
            {"a": account_id, "r": relative},
        )


def downgrade() -> None:
    # Files moved into per-account folders stay there.
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("recordings_dir")
