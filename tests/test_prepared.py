"""The statements every list page runs are prepared on PostgreSQL, and nothing else is."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from callhistory.api import create_app
from callhistory.config import Settings
from callhistory.schema import make_engine
from tests.conftest import Tenant, new_call

URL = "/api/v1/call-history"


def test_only_the_lists_fixed_statements_are_prepared_and_a_page_holds_its_values(
    db: Engine,
    settings: Settings,
    make_tenant: Callable[..., Tenant],
    add_calls: Callable[..., list[int]],
) -> None:
    """The token, the counters, an unfiltered page and its integrations are prepared: the server
    plans them once per connection. A page's account, limit and offset are written into its SQL,
    so that each is planned for its own values (an account of 3 calls and one of 30 may want
    different plans). A filtered list's statements are never prepared, however often they run:
    a generic plan for every substring or period was measured 5 times slower."""
    if db.dialect.name != "postgresql":
        pytest.skip("SQLite prepares nothing on a server")
    big, small = make_tenant(), make_tenant()
    big_ids = add_calls(big.account_id, [new_call(big.account_id, n) for n in range(30)])
    add_calls(small.account_id, [new_call(small.account_id, n) for n in range(3)])
    engine = make_engine(db.url.render_as_string(hide_password=False))
    try:
        with TestClient(create_app(settings, engine)) as client:
            for _ in range(7):  # more runs than psycopg's own threshold for preparing (5)
                first = client.get(URL, headers=big.headers).json()
                second = client.get(URL, params={"page": 2}, headers=big.headers).json()
                small_page = client.get(URL, headers=small.headers).json()
                src = client.get(URL, params={"filter[src]": "10"}, headers=big.headers).json()
            # requests one at a time use one pooled connection: this one
            with engine.connect() as conn:
                found = conn.execute(text("SELECT statement FROM pg_prepared_statements"))
                prepared = list(found.scalars())
    finally:
        engine.dispose()
    assert [c["id"] for c in first["data"]] == big_ids[:20]
    assert [c["id"] for c in second["data"]] == big_ids[20:]  # read backwards: LIMIT 10
    assert (small_page["meta"]["total"], src["meta"]["total"]) == (3, 30)
    tables = sorted(re.search(r"FROM (\w+)", s).group(1) for s in prepared)  # type: ignore[union-attr]
    expected = ["call_counts", "call_integrations", "calls", "calls", "calls"]
    assert tables == [*expected, "personal_access_tokens"]
    # the account as a range on PostgreSQL, as an equality on Citus (`store._account`)
    page = re.compile(
        r"account_id (?:BETWEEN|=) (\d+)::BIGINT .*LIMIT (\d+) OFFSET (\d+)$", re.DOTALL
    )
    pages = sorted(page.search(s).groups() for s in prepared if "FROM calls" in s)  # type: ignore[union-attr]
    big_id, small_id = str(big.account_id), str(small.account_id)
    assert pages == sorted([(big_id, "20", "0"), (big_id, "10", "0"), (small_id, "20", "0")])
