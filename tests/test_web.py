"""The manager's pages in a real browser: Debian's Chromium driven by Playwright, against the app
under a real uvicorn on the test database. Skipped when Chromium is missing, except in CI."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from callhistory import accounts, demo, store
from callhistory.api import create_app
from callhistory.config import Settings
from callhistory.models import CallType
from tests.conftest import PASSWORD, Tenant, new_call
from tests.test_security import live

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).parent.parent / "screenshots"
API = "/api/v1/call-history"

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    pytest.skip(f"no {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from openpyxl import load_workbook  # noqa: E402
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        yield launched
        launched.close()


@pytest.fixture
def site(db: Engine, settings: Settings) -> Iterator[str]:
    with live(create_app(settings, db), settings) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


@pytest.fixture
def calls_of(add_calls: Callable[..., list[int]]) -> Callable[[Tenant, int], None]:
    def add(tenant: Tenant, count: int) -> None:
        a = tenant.account_id
        start = datetime(2026, 1, 10, 6, 0)
        add_calls(
            a,
            [
                new_call(a, n, type=list(CallType)[n % 3],
                         started_at=start + timedelta(hours=7 * n),
                         duration=10 + (n * 37) % 300, conversation=(n % 4) * 5)
                for n in range(count)
            ],
        )  # fmt: skip

    return add


def log_in(page: Page, site: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{site}/")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("form.login button")


def total_on(page: Page) -> int:
    return int(page.inner_text("#total").split()[0].replace(",", ""))


def api_total(client: TestClient, tenant: Tenant, **params: Any) -> int:
    response = client.get(API, params=params, headers=tenant.headers)
    assert response.status_code == 200
    return int(response.json()["meta"]["total"])


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 812})
    page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_log_in_filter_sort_and_page(
    page: Page,
    site: str,
    client: TestClient,
    tenant: Tenant,
    calls_of: Callable[[Tenant, int], None],
) -> None:
    calls_of(tenant, 60)
    page.goto(f"{site}/?filter[type]=2")
    assert page.url.startswith(f"{site}/login?next=")  # not logged in: to the login page
    shoot(page, "login")
    page.fill("#email", tenant.email)
    page.fill("#password", "wrong-password")
    page.click("form.login button")
    expect(page.locator(".error")).to_have_text("These credentials do not match our records.")
    page.fill("#password", PASSWORD)
    page.click("form.login button")
    assert page.url == f"{site}/?filter[type]=2"  # back where the person wanted to go
    assert total_on(page) == api_total(client, tenant, **{"filter[type]": "2"}) == 20

    page.goto(f"{site}/")
    assert total_on(page) == 60
    # Newest first: the page's first row is the API's newest call.
    newest = client.get(API, params={"sort": "-datetime"}, headers=tenant.headers).json()
    assert page.locator("tbody tr").first.get_attribute("data-id") == str(newest["data"][0]["id"])
    shoot(page, "calls")

    # Direction + a date range, as a person sets them; the URL keeps them, Back works.
    page.select_option("select[name='filter[type]']", "1")
    page.fill("input[name='filter[from]']", "2026-01-11")
    page.fill("input[name='filter[to]']", "2026-01-15")
    page.click("form.filters button")
    period = {"filter[type]": "1", "filter[from]": "2026-01-11", "filter[to]": "2026-01-15"}
    assert total_on(page) == api_total(client, tenant, **period) > 0
    assert "filter%5Btype%5D=1" in page.url or "filter[type]=1" in page.url
    page.go_back()
    assert total_on(page) == 60

    # Sort by clicking a column: shortest first, then longest first.
    page.click("th >> text=Duration")
    shortest = client.get(API, params={"sort": "duration"}, headers=tenant.headers).json()
    assert page.locator("tbody tr").first.get_attribute("data-id") == str(shortest["data"][0]["id"])
    page.click("th >> text=Duration")
    longest = client.get(API, params={"sort": "-duration"}, headers=tenant.headers).json()
    assert page.locator("tbody tr").first.get_attribute("data-id") == str(longest["data"][0]["id"])

    # The page window: page 3 of 20 a page.
    page.click("nav.pages >> text='3'")
    expect(page.locator("nav.pages [aria-current=page]")).to_have_text("3")
    third = client.get(
        API, params={"sort": "-duration", "page": "3"}, headers=tenant.headers
    ).json()
    ids = [row.get_attribute("data-id") for row in page.locator("tbody tr").all()]
    assert ids == [str(call["id"]) for call in third["data"]]


def test_accounts_see_only_their_calls(
    browser: Browser,
    site: str,
    make_tenant: Callable[..., Tenant],
    calls_of: Callable[[Tenant, int], None],
) -> None:
    first, second = make_tenant(), make_tenant()
    calls_of(first, 7)
    calls_of(second, 3)
    for tenant, count in ((first, 7), (second, 3)):
        context = browser.new_context()
        page = context.new_page()
        log_in(page, site, tenant.email)
        assert total_on(page) == count
        context.close()


def test_log_out_ends_the_session_and_forms_need_the_csrf_token(
    browser: Browser, page: Page, site: str, tenant: Tenant, calls_of: Callable[[Tenant, int], None]
) -> None:
    calls_of(tenant, 2)
    log_in(page, site, tenant.email)
    assert total_on(page) == 2
    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "callhistory_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax"

    # Another site's form posting to /logout with this session but no token: refused.
    forged = page.request.post(f"{site}/logout", form={"csrf": "guess"}, max_redirects=0)
    assert forged.status == 403
    page.reload()
    assert total_on(page) == 2  # still logged in

    page.click("header button")  # Log out
    assert page.url.startswith(f"{site}/login")
    page.goto(f"{site}/")
    assert page.url.startswith(f"{site}/login")
    # The old cookie is worth nothing now: its token was revoked.
    stale = browser.new_context()
    stale.add_cookies(cookies)
    replay = stale.new_page()
    replay.goto(f"{site}/")
    assert replay.url.startswith(f"{site}/login")
    stale.close()


def test_open_a_call_and_play_its_recording(
    page: Page,
    site: str,
    db: Engine,
    settings: Settings,
    tenant: Tenant,
    make_tenant: Callable[..., Tenant],
    add_calls: Callable[..., list[int]],
) -> None:
    a = tenant.account_id
    with db.begin() as conn:
        root = accounts.recordings_root(conn, settings.recordings_root, a)
    demo.write_clips(root)
    [played, silent] = add_calls(
        a,
        [
            new_call(a, 1, recording="demo/clip-3.wav", duration=45, conversation=40),
            new_call(a, 2, type=CallType.INCOMING, conversation=0, src="998901234567", dst="101"),
        ],
    )
    other = make_tenant()
    [foreign] = add_calls(other.account_id, [new_call(other.account_id, 1)])
    ranges: list[str] = []
    page.on(
        "request",
        lambda r: ranges.append(r.headers.get("range", "")) if "/storage/" in r.url else None,
    )
    log_in(page, site, tenant.email)
    page.click(f"tr[data-id='{played}'] a")
    assert page.url == f"{site}/calls/{played}"
    expect(page.locator("h1")).to_contain_text("Outgoing call")
    expect(page.locator(".fields")).to_contain_text("ANSWERED")
    page.select_option("#speed", "1.5")
    page.keyboard.press("Space")  # plays
    page.wait_for_function("document.getElementById('recording').currentTime > 0.5", timeout=10_000)
    state = page.evaluate(
        "(() => { const a = document.getElementById('recording');"
        " return [a.paused, a.playbackRate, a.duration]; })()"
    )
    assert state[0] is False and state[1] == 1.5 and state[2] > 2
    assert any(value.startswith("bytes=") for value in ranges), ranges  # the browser seeks by Range
    shoot(page, "call")

    page.goto(f"{site}/calls/{silent}")
    expect(page.locator(".status-2")).to_contain_text("Not answered")
    assert page.locator("audio").count() == 0
    page.goto(f"{site}/calls/{foreign}")  # another account's call
    expect(page.locator("h1")).to_have_text("Call not found.")


def bars_on(page: Page) -> dict[str | None, list[int]]:
    """The day chart's bars: day → [calls, missed]."""
    return {
        bar.get_attribute("data-day"): [int(bar.get_attribute("data-calls") or 0),
                                        int(bar.get_attribute("data-missed") or 0)]
        for bar in page.locator(".bar").all()
    }  # fmt: skip


def test_dashboard_shows_the_statistics_apis_numbers(
    page: Page,
    site: str,
    client: TestClient,
    tenant: Tenant,
    calls_of: Callable[[Tenant, int], None],
) -> None:
    calls_of(tenant, 40)  # 2026-01-10 11:00 local on, every 7 hours
    period = {"from": "2026-01-11", "to": "2026-01-17"}
    log_in(page, site, tenant.email)
    page.goto(f"{site}/dashboard?from={period['from']}&to={period['to']}")

    def api(path: str) -> Any:
        response = client.get(f"/api/v1/statistic/{path}", params=period, headers=tenant.headers)
        assert response.status_code == 200
        return response.json()["result"]

    counts = api("calls-count")
    for name in ("incoming", "outgoing", "internal"):
        card = page.locator(f"#total-{name}")
        assert card.locator("[data-total]").get_attribute("data-total") == str(
            counts[name]["total"]
        )
        assert card.locator("[data-missed]").get_attribute("data-missed") == str(
            counts[name]["not_answered"]
        )
    by_day: dict[str, list[int]] = {}
    for direction in api("calls-by-day").values():
        for key, index in (("all", 0), ("not_answered", 1)):
            for bucket in direction[key]:
                by_day.setdefault(bucket["date_day"], [0, 0])[index] += bucket["call_count"]
    bars = bars_on(page)
    assert bars == by_day and len(bars) == 7
    # One direction at a time: the Statistics API's series for it.
    page.click("#directions >> text=Incoming")
    expect(page.locator("#directions [aria-current]")).to_have_text("Incoming")
    incoming = api("calls-by-day")["incoming"]
    bars = bars_on(page)
    missed_by_day = {b["date_day"]: b["call_count"] for b in incoming["not_answered"]}
    assert bars == {
        b["date_day"]: [b["call_count"], missed_by_day.get(b["date_day"], 0)]
        for b in incoming["all"]
    }
    assert "from=2026-01-11" in page.url  # the period kept
    missed = api("missed-unreturned")
    shown = [
        row.get_attribute("data-number")
        for row in page.locator("#missed tbody tr[data-number]").all()
    ]
    assert shown == [row["number"] for row in missed["data"]]
    users = api("calls-by-users")
    rows = page.locator("#extensions tbody tr[data-number]").all()
    assert [row.get_attribute("data-number") for row in rows] == [u["number"] for u in users]
    cells = page.locator("#heatmap td[data-calls]").all()
    assert len(cells) == 7 * 24
    assert sum(int(c.get_attribute("data-calls") or 0) for c in cells) == sum(
        counts["all"].values()
    )
    shoot(page, "dashboard")

    page.goto(f"{site}/dashboard?from=2026-01-11&to=2025-01-01")  # a bad period: said, not a 500
    expect(page.locator(".error")).to_have_text(
        "The to field must be a date after or equal to from."
    )


def test_export_the_current_filter_to_csv_and_excel(
    page: Page,
    site: str,
    client: TestClient,
    tenant: Tenant,
    calls_of: Callable[[Tenant, int], None],
) -> None:
    calls_of(tenant, 2500)  # more than one batch of the server-side cursor
    log_in(page, site, tenant.email)
    page.goto(f"{site}/?filter[type]=2&filter[status]=1")
    with page.expect_download() as caught:
        page.click("#export")
    download = caught.value
    assert download.suggested_filename.startswith("calls-")
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert rows[0] == [
        "id", "date_time", "direction", "status", "src", "dst", "external_number", "duration",
        "conversation", "disposition", "recorded",
    ]  # fmt: skip
    filters = {"filter[type]": "2", "filter[status]": "1", "sort": "-datetime", "per_page": "300"}
    listed = client.get(API, params=filters, headers=tenant.headers).json()
    assert len(rows) - 1 == listed["meta"]["total"] == total_on(page)
    first = listed["data"][0]
    assert rows[1][:9] == [
        str(first["id"]), first["date_time"], "Outgoing", "Answered", first["src"], first["dst"],
        first["external_number"], str(first["duration"]), str(first["conversation"]),
    ]  # fmt: skip
    assert [int(r[0]) for r in rows[1:301]] == [c["id"] for c in listed["data"]]  # the list's order

    with page.expect_download() as caught:
        page.click("#export-xlsx")
    assert caught.value.suggested_filename.endswith(".xlsx")
    book = load_workbook(io.BytesIO(Path(caught.value.path()).read_bytes()), read_only=True)
    cells = [
        ["" if v is None else str(v) for v in r] for r in book.active.iter_rows(values_only=True)
    ]
    assert cells == rows  # the same rows as the CSV


def test_new_calls_appear_on_the_live_first_page(
    page: Page,
    site: str,
    client: TestClient,
    tenant: Tenant,
    calls_of: Callable[[Tenant, int], None],
) -> None:
    calls_of(tenant, 25)
    log_in(page, site, tenant.email)
    assert page.locator("table[data-live]").count() == 1
    assert total_on(page) == 25
    item = {"pbx_call_id": "live-1", "date_time": "2026-12-31 23:00:00", "src": "998901112233",
            "dst": "101", "duration": 40, "conversation": 30, "type": 1, "status": 1}  # fmt: skip
    response = client.post(API, json=[item], headers=tenant.headers)
    assert response.status_code == 201, response.text
    new_id = response.json()["data"][0]["id"]
    # Without a reload: the new call on top, marked, and the total updated (live.js, every 5 s).
    row = page.locator(f"tbody tr[data-id='{new_id}']")
    expect(row).to_have_class("new", timeout=15_000)
    assert page.locator("tbody tr").first.get_attribute("data-id") == str(new_id)
    assert total_on(page) == 26
    assert page.locator("tbody tr").count() == 20
    # A filtered list stays as it is.
    page.goto(f"{site}/?filter[type]=2")
    assert page.locator("table[data-live]").count() == 0


def test_switch_language(
    page: Page, site: str, tenant: Tenant, calls_of: Callable[[Tenant, int], None]
) -> None:
    calls_of(tenant, 30)
    log_in(page, site, tenant.email)
    page.goto(f"{site}/?per_page=50")
    page.click("nav.languages >> text=Русский")
    assert page.url == f"{site}/?per_page=50"  # back where the person was
    expect(page.locator("html")).to_have_attribute("lang", "ru")
    expect(page.locator("#total")).to_have_text("30 звонков")
    expect(page.locator("th").first).to_have_text("Дата и время")
    shoot(page, "calls-ru")
    page.goto(f"{site}/dashboard?from=2026-01-10&to=2026-01-20")  # remembered on every page
    expect(page.locator("header nav a[href='/dashboard']")).to_have_text("Сводка")
    page.click("nav.languages >> text=Oʻzbekcha")
    expect(page.locator("html")).to_have_attribute("lang", "uz")
    expect(page.locator("header nav a[href='/']")).to_have_text("Qoʻngʻiroqlar")
    shoot(page, "dashboard-uz")
    page.click("nav.languages >> text=English")
    expect(page.locator("header nav a[href='/']")).to_have_text("Calls")


#: Every visible form control's accessible name as the browser computes the simple cases: an
#: aria-label, a <label for>, a wrapping <label>, or (buttons, links) its text.
UNNAMED_CONTROLS = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, a[href]')].filter((el) => {
  const named = el.getAttribute('aria-label')
    || (el.id && document.querySelector(`label[for="${el.id}"]`))
    || el.closest('label') || (el.matches('button, a') && el.textContent.trim());
  return !named;
}).map((el) => el.outerHTML)"""

#: WCAG's contrast of each text element against its (opaque or blended) background, lowest first.
LOWEST_CONTRAST = """() => {
  const rgb = (s) => s.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => { let color = [255, 255, 255], layers = [];
    for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
      if ((c[3] ?? 1) > 0) layers.push(c); if ((c[3] ?? 1) === 1) break; }
    for (const c of layers.reverse()) { const a = c[3] ?? 1;
      color = color.map((v, i) => v * (1 - a) + c[i] * a); }
    return color; };
  const found = [];
  for (const el of document.querySelectorAll('body *')) {
    if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    found.push([ratio, el.textContent.trim().slice(0, 30)]);
  }
  return found.sort((x, y) => x[0] - y[0]).slice(0, 3);
}"""


def test_pages_are_accessible(
    page: Page, site: str, client: TestClient, tenant: Tenant,
    calls_of: Callable[[Tenant, int], None],
) -> None:  # fmt: skip
    """Every control has a name, every text a contrast of 4.5:1 or more (WCAG AA), and the
    filters are reachable with Tab in their visual order."""
    calls_of(tenant, 60)
    page.goto(f"{site}/login")
    assert page.evaluate(UNNAMED_CONTROLS) == []
    log_in(page, site, tenant.email)
    first = client.get(API, headers=tenant.headers).json()["data"][0]["id"]
    for path in ("/", f"/calls/{first}", "/dashboard?from=2026-01-10&to=2026-01-31"):
        page.goto(f"{site}{path}")
        assert page.evaluate(UNNAMED_CONTROLS) == [], path
        lowest = page.evaluate(LOWEST_CONTRAST)
        assert lowest and lowest[0][0] >= 4.5, (path, lowest)
    page.goto(f"{site}/")
    page.focus("select[name='filter[type]']")  # (a date input takes a Tab per part of the date)
    order = []
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.name"))
    assert order == ["filter[status]", "filter[src]", "filter[dst]", "filter[external_number]"]


def test_presets_duration_external_number_and_sync_badges(
    page: Page,
    site: str,
    client: TestClient,
    tenant: Tenant,
    db: Engine,
    add_calls: Callable[..., list[int]],
) -> None:
    a = tenant.account_id
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    pks = add_calls(a, [
        new_call(a, n, started_at=now - timedelta(hours=13 * n), duration=20 + 25 * n,
                 conversation=10, external_number=["781130590", "712005060"][n % 2])
        for n in range(12)
    ])  # fmt: skip
    with db.begin() as conn:
        store.add_integration(conn, a, pks[0], "amocrm", "failed", "Contact not found")
        store.add_integration(conn, a, pks[1], "amocrm", "synced", None)
    log_in(page, site, tenant.email)
    expect(page.locator(f"tr[data-id='{pks[0]}'] .badge")).to_have_text("failed")
    expect(page.locator(f"tr[data-id='{pks[1]}'] .badge")).to_have_text("synced")
    assert page.locator(f"tr[data-id='{pks[2]}'] .badge").count() == 0

    today = datetime.now(ZoneInfo("Asia/Tashkent")).strftime("%Y-%m-%d")
    page.click(".presets >> text=Today")
    expect(page.locator(".presets [aria-current]")).to_have_text("Today")
    assert total_on(page) == api_total(
        client, tenant, **{"filter[from]": today, "filter[to]": today}
    )
    page.click(".presets >> text=This week")  # Monday to today
    page.select_option("select[name='filter[duration]']", ">60")
    page.fill("input[name='filter[external_number]']", "7811")
    page.click("form.filters button")
    query = dict(item.split("=", 1) for item in page.url.split("?", 1)[1].split("&"))
    asked = {k.replace("%5B", "[").replace("%5D", "]"): v for k, v in query.items()}
    expected = api_total(
        client, tenant, **{"filter[from]": asked["filter[from]"], "filter[to]": asked["filter[to]"],
                           "filter[duration]": ">60", "filter[external_number]": "7811"}
    )  # fmt: skip
    assert total_on(page) == expected > 0
