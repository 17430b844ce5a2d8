"""Latency of the Statistics API at scale. Run by hand, not in CI.

    DATABASE_URL=postgresql://postgres@127.0.0.1/bench python -m bench.statistics --calls 10000000
    .venv/bin/python -m bench.statistics --calls 1000000              # SQLite file in bench/data

Uses (or seeds) the database of bench.list_calls, then times each endpoint of issue 12 through the
real app (ASGI, in process): median and p99 in ms, and the median's ratio to the bare page fetch
measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
from datetime import timedelta

from sqlalchemy import Engine, func, select

from bench.list_calls import (
    BIG,
    add_layout,
    bare_page,
    bench_database,
    in_process,
    percentile,
    seed,
    timed,
)
from callhistory import accounts
from callhistory.models import UserType
from callhistory.schema import calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    add_layout(parser)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    settings, engine = bench_database()
    _, token = seed(engine, args.calls, not args.random_order)
    with engine.connect() as conn:
        account_id = accounts.find_account_by_name(conn, BIG)
        latest = conn.execute(
            select(func.max(calls.c.started_at)).where(calls.c.account_id == account_id)
        ).scalar_one()
    last = latest + timedelta(hours=5)  # Tashkent
    day = f"{last:%Y-%m-%d}"

    def before(days: int) -> str:
        return f"{last - timedelta(days=days):%Y-%m-%d}"

    month = f"from={before(30)}&to={day}"
    shapes = {
        "calls-count one day": f"calls-count?from={day}&to={day}",
        "calls-count 60 days": f"calls-count?from={before(60)}&to={day}",
        "calls-count 10 years, mid-hour ends": (
            f"calls-count?from={before(3650)} 10:17:03&to={day} 15:48:41"
        ),
        "calls-by-hour 31 days": f"calls-by-hour?from={before(30)}&to={day}",
        "calls-by-day one year": f"calls-by-day?from={before(365)}&to={day}",
        "calls-by-month 10 years": f"calls-by-month?from={before(3650)}&to={day}",
        "calls-by-external-number one month": f"calls-by-external-number?{month}",
        "calls-by-users one month": f"calls-by-users?{month}",
        "calls-by-users one month, mid-day ends": (
            f"calls-by-users?from={before(30)} 10:17:03&to={day} 15:48:41"
        ),
        "heatmap one month": f"heatmap?{month}",
        "summary one month": f"summary?{month}",
        "summary one day": f"summary?from={day}&to={day}",
        "missed-unreturned one month, first page": f"missed-unreturned?{month}",
        "calls-count one month, one number": f"calls-count?{month}&external_number=781130590",
        "calls-count-by-history type+status+week": (
            f"calls-count-by-history?filter[type]=1&filter[status]=2"
            f"&filter[from]={before(6)}&filter[to]={day}"
        ),
    }
    client = in_process(settings, engine)
    headers = {"Authorization": f"Bearer {token}"}
    operator = {"Authorization": f"Bearer {operator_token(engine, account_id)}"}

    base = statistics.median(timed(lambda: bare_page(engine, account_id), args.runs))
    print(
        f"\n{engine.dialect.name}, {args.calls} calls, {args.runs} runs each; floor {base:.2f} ms\n"
    )
    print("| endpoint | median ms | p99 ms | median / floor |\n|---|---:|---:|---:|")
    runs = [(name, f"/api/v1/statistic/{path}", headers) for name, path in shapes.items()]
    runs += [  # an operator (role user) with extensions 101 and 102: counted from its calls
        ("operator: list, default page", "/api/v1/call-history", operator),
        ("operator: calls-count one month", f"/api/v1/statistic/calls-count?{month}", operator),
        ("operator: summary one month", f"/api/v1/statistic/summary?{month}", operator),
    ]
    for name, url, who in runs:
        response = client.get(url, headers=who)
        assert response.status_code == 200, (url, response.text)
        ms = timed(lambda url=url, who=who: client.get(url, headers=who), args.runs)
        print(f"| {name} | {statistics.median(ms):.1f} | {percentile(ms, 99):.1f} "
              f"| {statistics.median(ms) / base:.0f} |")  # fmt: skip


def operator_token(engine: Engine, account_id: int) -> str:
    """A token of the big account's operator (role user, extensions 101 and 102)."""
    with engine.begin() as conn:
        user = accounts.find_user(conn, "operator@example.com")
        user_id = int(user.id) if user else accounts.create_user(
            conn, account_id, "operator@example.com", "Operator", "bench1",
            role=UserType.USER, extensions=["101", "102"],
        )  # fmt: skip
        return accounts.create_token(conn, user_id, "bench")


if __name__ == "__main__":
    main()
