"""Server time of the web pages at scale, and the weight of what they load. Run by hand.

    DATABASE_URL=postgresql://postgres@127.0.0.1/bench python -m bench.pages --calls 1000000
    .venv/bin/python -m bench.pages --calls 1000000             # SQLite file in bench/data

Uses (or seeds) the database of bench.list_calls, logs in through the login form once, then
times each page through the real app (ASGI, in process, the session cookie on every request):
median and p99 in ms, and the median's ratio to the bare page fetch measured in the same run.
Then the pages' own JavaScript and CSS, raw and gzipped (Swagger UI is only for /docs).
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
from datetime import timedelta

from sqlalchemy import func, select

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
from callhistory.schema import calls
from callhistory.web import STATIC

#: What the pages load (base.html, calls.html, call.html).
ASSETS = ("app.css", "player.js", "live.js")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    add_layout(parser)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    settings, engine = bench_database()
    seed(engine, args.calls, not args.random_order)
    with engine.connect() as conn:
        account_id = accounts.find_account_by_name(conn, BIG)
        latest, some_call = conn.execute(
            select(func.max(calls.c.started_at), func.max(calls.c.id)).where(
                calls.c.account_id == account_id
            )
        ).one()
    day = f"{latest + timedelta(hours=5):%Y-%m-%d}"  # Tashkent
    week = f"{latest + timedelta(hours=5) - timedelta(days=6):%Y-%m-%d}"

    client = in_process(settings, engine)
    form = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    login = {"csrf": csrf.group(1), "email": "bench@example.com", "password": "bench1", "next": "/"}
    assert client.post("/login", data=login, follow_redirects=False).status_code == 303

    pages = {
        "calls, first page (live)": "/",
        "calls, outgoing answered, one day": (
            f"/?filter[type]=2&filter[status]=1&filter[from]={day}&filter[to]={day}"
        ),
        "calls, page 500, 50 a page": "/?page=500&per_page=50",
        "calls, sorted by duration": "/?sort=-duration",
        "one call": f"/calls/{some_call}",
        "dashboard, 7 days": f"/dashboard?from={week}&to={day}",
    }
    base = statistics.median(timed(lambda: bare_page(engine, account_id), args.runs))
    print(f"\n{engine.dialect.name}, {args.calls} calls, {args.runs} runs each; "
          f"floor (bare page fetch) {base:.2f} ms\n")  # fmt: skip
    print("| page | median ms | p99 ms | median / floor |\n|---|---:|---:|---:|")
    for name, url in pages.items():
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        ms = timed(lambda url=url: client.get(url), args.runs)
        print(f"| {name} | {statistics.median(ms):.1f} | {percentile(ms, 99):.1f} "
              f"| {statistics.median(ms) / base:.0f} |")  # fmt: skip

    print("\n| asset | bytes | gzipped |\n|---|---:|---:|")
    raw = zipped = 0
    for asset in ASSETS:
        data = (STATIC / asset).read_bytes()
        raw, zipped = raw + len(data), zipped + len(gzip.compress(data, 9))
        print(f"| {asset} | {len(data):,} | {len(gzip.compress(data, 9)):,} |")
    print(f"| all | {raw:,} | {zipped:,} |")


if __name__ == "__main__":
    main()
