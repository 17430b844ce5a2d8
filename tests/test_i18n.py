"""The pages' languages: every text the templates and the pages show has its Russian and Uzbek
translation (read from the catalogs as the app reads them), and a page comes in the language
asked for (the switcher's cookie, else Accept-Language), numbers and dates written its way."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient
from jinja2.ext import babel_extract

from callhistory import pagination
from callhistory.api.auth import BAD_CREDENTIALS
from callhistory.models import CallStatus, CallType
from callhistory.stats import report
from callhistory.web import TEMPLATES, i18n, pages
from tests.conftest import Tenant, new_call
from tests.test_roles import web_session


def shown_texts() -> set[str | tuple[str, ...]]:
    """What the pages may show: the templates' `_()`/`ngettext()` texts, and the texts they pass
    through `_()` from elsewhere (labels, weekdays, sync states, page links, login errors)."""
    found: set[str | tuple[str, ...]] = set()
    for template in TEMPLATES.glob("*.html"):
        with template.open("rb") as f:
            for _, _, message, _ in babel_extract(f, ("_", "ngettext"), [], {}):
                if isinstance(message, tuple):
                    found.add(tuple(m for m in message if m))
                elif message:
                    found.add(message)
    found |= {t.label for t in CallType} | {s.label for s in CallStatus}
    found |= {f"{t.label} calls" for t in CallType}
    found |= {day.capitalize() for day in report.heatmap([])["weekdays"]}
    found |= {"synced", "failed", "pending", pagination.PREVIOUS_LABEL, pagination.NEXT_LABEL}
    found |= {BAD_CREDENTIALS, pages.TOO_MANY, pages.ENTER_BOTH}
    found |= {label for label, _, _ in pages._presets({}, ZoneInfo("UTC"))}
    return found


@pytest.mark.parametrize("language", ["ru", "uz"])
def test_every_text_is_translated(language: str) -> None:
    with (i18n.LOCALE / f"{language}.po").open("rb") as po:
        catalog = read_po(po, locale=language)
    translated = {}
    for message in catalog:
        if message.id:
            key = message.id if isinstance(message.id, str) else tuple(message.id)
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            translated[key] = all(strings)
    missing = [text for text in shown_texts() if not translated.get(text)]
    assert missing == [], f"{language}: not translated: {missing}"
    unused = set(translated) - shown_texts()
    assert unused == set(), f"{language}: translations of nothing: {unused}"


def test_pages_in_the_chosen_language(
    make_client: Callable[..., TestClient], tenant: Tenant, add_calls: Callable[..., list[int]]
) -> None:
    a = tenant.account_id
    add_calls(a, [new_call(a, n, started_at=datetime(2026, 1, 13, 12, 4, 5)) for n in range(1234)])
    client = make_client()
    web_session(client, tenant.email)
    english = client.get("/").text
    assert '<html lang="en">' in english and "1,234 calls" in english
    assert "Jan 13, 2026, 5:04:05\u202fPM" in english  # Tashkent: UTC+5

    # The switcher: a cookie for a year, back where the person was.
    response = client.get("/language", params={"lang": "ru", "next": "/?per_page=50"},
                          follow_redirects=False)  # fmt: skip
    assert (response.status_code, response.headers["location"]) == (303, "/?per_page=50")
    assert re.search(r"lang=ru; HttpOnly; Max-Age=31536000", response.headers["set-cookie"])
    russian = client.get("/").text
    assert '<html lang="ru">' in russian and "1\u00a0234 звонка" in russian
    assert "13 янв. 2026\u202fг., 17:04:05" in russian and "Исходящий" in russian
    assert "Дата и время" in russian and "Вперёд »" in russian
    assert "Сводка" in client.get("/dashboard", params={"from": "2026-01-13"}).text

    client.get("/language", params={"lang": "uz"})
    uzbek = client.get("/").text
    assert '<html lang="uz">' in uzbek and "1\u00a0234 ta qoʻngʻiroq" in uzbek
    assert "Sana va vaqt" in uzbek and "Chiquvchi" in uzbek
    assert client.get("/language", params={"lang": "xx"}).status_code == 200  # ignored: home
    assert '<html lang="uz">' in client.get("/").text


def test_the_browsers_language_until_one_is_chosen(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    asked = {"Accept-Language": "de-DE,ru;q=0.8,en;q=0.5"}
    assert '<html lang="ru">' in client.get("/login", headers=asked).text
    assert "Войти" in client.get("/login", headers=asked).text
    assert '<html lang="en">' in client.get("/login", headers={"Accept-Language": "fr"}).text
    client.cookies.set(i18n.COOKIE, "uz")
    assert "Kirish" in client.get("/login", headers=asked).text


def test_catalogs_ship_with_the_package() -> None:
    assert {p.stem for p in Path(i18n.LOCALE).glob("*.po")} == set(i18n.LANGUAGES) - {"en"}
