"""On a Citus cluster (DATABASE_URL = a coordinator, e.g. `scripts/citus-cluster.sh url`): the
schema is sharded by account, and every statement a request of one account sends runs on one shard.

Skipped elsewhere (the `cluster` fixture); CITUS_REQUIRED=1 (CI's cluster run) makes a missing
Citus a failure instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, text
from typer.testing import CliRunner

from callhistory import accounts, citus, crmstore
from callhistory.api import create_app
from callhistory.cli import app
from callhistory.config import Settings
from callhistory.crypto import seal
from callhistory.ingest.asterisk_csv import import_paths
from callhistory.models import CallType, UserType
from callhistory.store import utcnow
from tests.conftest import PASSWORD, Tenant, new_call
from tests.test_asterisk_csv import CONFIG, SCENARIOS
from tests.test_ingest_api import call as ingest_body
from tests.test_roles import web_session

AddCalls = Callable[[int, list[Any]], list[int]]
URL = "/api/v1/call-history"
STATS = "/api/v1/statistic"


def test_the_schema_is_sharded_by_account(cluster: Engine) -> None:
    with cluster.connect() as conn:
        tables = {
            row.name: (row.partmethod, row.column, row.colocationid)
            for row in conn.execute(
                text(
                    "SELECT logicalrelid::text AS name, partmethod, colocationid,"
                    " column_to_column_name(logicalrelid, partkey) AS column"
                    " FROM pg_dist_partition"
                )
            )
        }
        keys = dict(
            conn.execute(
                text(
                    "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE contype = 'p' AND connamespace = 'public'::regnamespace"
                )
            ).all()
        )
        unique = conn.execute(
            text(
                "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
                " WHERE indisunique AND indrelid::regclass::text = ANY(:tables)"
            ),
            {"tables": list(citus.DISTRIBUTED_TABLES)},
        ).all()
    colocation = tables["calls"][2]
    assert tables == {
        **{name: ("n", None, tables[name][2]) for name in citus.REFERENCE_TABLES},
        **{name: ("h", "account_id", colocation) for name in citus.DISTRIBUTED_TABLES},
    }
    assert "login_failures" not in tables  # the coordinator's own: no account
    assert {name: keys[name] for name in citus.DISTRIBUTED_TABLES} == {
        "calls": "PRIMARY KEY (account_id, id)",
        "call_legs": "PRIMARY KEY (account_id, id)",
        "call_integrations": "PRIMARY KEY (account_id, id)",
        "call_counts": "PRIMARY KEY (account_id, type, status)",
        "call_rollups": "PRIMARY KEY (account_id, bucket, type, status)",
        "import_files": "PRIMARY KEY (account_id, id)",
        "number_rollups": "PRIMARY KEY (account_id, side, day, number, type, status)",
        "wait_rollups": "PRIMARY KEY (account_id, day, type, answered, wait)",
        "callers": "PRIMARY KEY (account_id, number)",
        "hour_rollups": "PRIMARY KEY (account_id, hour, type, status)",
        "gram_counts": "PRIMARY KEY (account_id, field, gram, type, status)",
        "length_counts": "PRIMARY KEY (account_id, field, seconds, type, status)",
        "id_counts": "PRIMARY KEY (account_id, block, type, status)",
        "id_spans": "PRIMARY KEY (account_id, block)",
        "length_pairs": "PRIMARY KEY (account_id, duration, conversation, type, status)",
        "caller_gaps": "PRIMARY KEY (account_id, day, since)",
        "missed_calls": "PRIMARY KEY (account_id, id)",
        "missed_rollups": "PRIMARY KEY (account_id, day, next_day, waited)",
    }
    assert unique and all("(account_id" in definition for _name, definition in unique)


QUERIES = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
DISTRIBUTED = re.compile(r"\b(" + "|".join(citus.DISTRIBUTED_TABLES) + r")\b")


@pytest.fixture
def strict(cluster: Engine) -> Iterator[tuple[Engine, list[tuple[str, Any]]]]:
    """An engine on which a statement that spans shards is an error (Citus raises at ERROR level
    for every multi-task query), recording what it sends."""
    url = cluster.url.render_as_string(hide_password=False)
    options = "-c plan_cache_mode=force_custom_plan -c citus.multi_task_query_log_level=error"
    engine = create_engine(url, connect_args={"options": options})
    sent: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        batch = many and isinstance(parameters, (list, tuple))
        sent.append((statement, parameters[0] if batch else parameters))

    event.listen(engine, "before_cursor_execute", record)
    yield engine, sent
    engine.dispose()


def test_the_hot_paths_of_one_account_run_on_one_shard(
    strict: tuple[Engine, list[tuple[str, Any]]],
    cluster: Engine,
    settings: Settings,
    make_tenant: Callable[..., Tenant],
    add_calls: AddCalls,
    tmp_path: Path,
    password_hash: str,
) -> None:
    engine, sent = strict
    a, other = make_tenant(), make_tenant()
    for tenant in (a, other):
        add_calls(
            tenant.account_id,
            [
                new_call(tenant.account_id, n, src=f"10{n % 3}", type=CallType(1 + n % 3))
                for n in range(30)
            ],
        )
    with cluster.begin() as conn:
        accounts.set_pbx_config(conn, a.account_id, CONFIG)
        operator = accounts.create_user(
            conn, a.account_id, "op@example.com", "Op", PASSWORD,
            role=UserType.USER, extensions=["101"], password_hash=password_hash,
        )  # fmt: skip
        operator_token = accounts.create_token(conn, operator, "op", ("*",))
        integration_id = crmstore.connect(
            conn,
            a.account_id,
            "amocrm",
            "http://127.0.0.1:9",
            "long_lived",
            seal(settings.signing_key, {"access_token": "t"}),
            None,
        )
    client = TestClient(create_app(settings, engine), raise_server_exceptions=False)
    sent.clear()

    def ok(response: Any) -> Any:
        assert response.status_code in (200, 201, 303), (response.status_code, response.text)
        return response

    # The contract's list: each filter, sort and page shape; a call; an operator's list.
    period = {"from": "2026-01-01", "to": "2026-01-31"}
    for params in [
        {},
        {"filter[src]": "10", "sort": "-duration"},
        {"filter[dst]": "998901234567", "filter[external_number]": "7811"},
        {"filter[type]": "2", "filter[status]": "1", "filter[duration]": ">10"},
        {"filter[from]": "2026-01-13 17:00:00", "filter[to]": "2026-01-13 17:20:00"},
        {"sort": "-datetime", "filter[conversation]": "<10"},
        {"per_page": "1", "page": "25"},
        {"per_page": "1", "page": "last"},
    ]:
        ok(client.get(URL, params=params, headers=a.headers))
    call_id = ok(client.get(URL, headers=a.headers)).json()["data"][0]["id"]
    ok(client.get(f"{URL}/{call_id}", headers=a.headers))
    ok(client.get(URL, headers={"Authorization": f"Bearer {operator_token}"}))
    # Ingest: JSON (queued for the CRM), and Asterisk's Master.csv with its legs.
    body = [
        ingest_body(pbx_call_id=f"json-{n}", date_time="2026-01-14 09:00:00", recording=...)
        for n in range(3)
    ]
    ok(client.post(URL, json=body, headers=a.headers))
    master = tmp_path / "Master.csv"
    master.write_text("".join(lines for _name, lines, _gmt, _expected in SCENARIOS[:6]))
    report = import_paths(engine, a.account_id, [str(master)], gmt=True)
    assert report.bad == [] and report.outcome.created > 0
    # The CRM queue: claim, fail, retry from the API, settle.
    with engine.begin() as conn:
        integration = crmstore.get(conn, integration_id)
        rows = crmstore.claim(
            conn, integration, "w1", utcnow() + timedelta(hours=1),
            lease=timedelta(minutes=1), settle=timedelta(0), limit=10,
        )  # fmt: skip
        assert len(rows) >= 3  # the JSON calls and the CSV scenarios' outside calls
        crmstore.settle(conn, a.account_id, "w1", [(rows[0].row_id, None, "Contact not found")])
        crmstore.retry_later(conn, a.account_id, "w1", [rows[1].row_id], "busy", utcnow(), 5)
    failed = rows[0]
    ok(client.post(f"{URL}/{failed.id}/integrations/{failed.row_id}/retry", headers=a.headers))
    # Statistics, and the web app's list, call, dashboard and export.
    for path in (
        "calls-count", "calls-by-hour", "calls-by-day", "calls-by-month",
        "calls-by-external-number", "calls-by-users", "missed-unreturned", "summary", "heatmap",
    ):  # fmt: skip
        ok(client.get(f"{STATS}/{path}", params=period, headers=a.headers))
    for params in ({}, {"filter[integration_status]": "failed"}, {"filter[src]": "101"}):
        ok(client.get(f"{STATS}/calls-count-by-history", params=params, headers=a.headers))
    web_session(client, a.email)
    for page in ("/", f"/calls/{call_id}", "/dashboard", "/export.csv", "/export.xlsx"):
        ok(client.get(page))
    client.close()

    # Every statement that touched a sharded table ran as one task: EXPLAIN says so.
    spanning = []
    raw = cluster.raw_connection()
    try:
        cursor = raw.cursor()
        explained = 0
        for statement, parameters in sent:
            verb = statement.lstrip().split(None, 1)[0].upper()
            if not DISTRIBUTED.search(statement) or verb not in QUERIES:
                continue  # SET LOCAL, ANALYZE after a bulk load, other tables
            explained += 1
            cursor.execute(f"EXPLAIN {statement}", parameters)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            if "Task Count: 1\n" not in plan + "\n":
                spanning.append((statement, plan))
        raw.rollback()
    finally:
        raw.close()
    print(f"\n{explained} statements on sharded tables, {len(spanning)} spanning shards")
    assert explained > 80
    assert spanning == []


def test_db_distribute_shards_once_and_refuses_a_database_without_citus(
    db: Engine, cli_env: dict[str, str]
) -> None:
    result = CliRunner().invoke(app, ["db", "distribute"], env=cli_env)
    with db.connect() as conn:
        on_citus = citus.enabled(conn)
    if on_citus:  # the migrations sharded it already
        assert (result.exit_code, result.output) == (0, "already sharded by account\n")
    else:
        assert result.exit_code == 1
        assert result.output == (
            "error: this database has no citus extension: CREATE EXTENSION citus on every node"
            " and add the workers first (README: Scaling out)\n"
        )
