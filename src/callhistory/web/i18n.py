"""The pages' languages: English (the source), Russian and Uzbek (Latin), from gettext catalogs
(`locale/<lang>.po`, read with Babel at start), with numbers and dates written the language's
way (Babel's CLDR data). A person picks one (`/language?lang=ru`), a cookie remembers it;
until then the browser's Accept-Language decides."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations
from starlette.requests import Request

LOCALE = Path(__file__).parent / "locale"
#: Each language by its code, named in itself (what the switcher shows).
LANGUAGES = {"en": "English", "ru": "Русский", "uz": "O\u02bbzbekcha"}  # \u02bb: the Uzbek letter
DEFAULT = "en"
COOKIE = "lang"
#: The stored local times the pages show (`resources.local_time`).
_STORED = "%Y-%m-%d %H:%M:%S"


@cache
def translations(language: str) -> NullTranslations:
    """The catalog of a language (English needs none: the templates are written in it)."""
    path = LOCALE / f"{language}.po"
    if language == DEFAULT or not path.exists():
        return NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def choose(request: Request) -> str:
    """The cookie's language, else the best of the browser's Accept-Language, else English."""
    chosen = request.cookies.get(COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    wanted = []
    for part in request.headers.get("accept-language", "").split(","):
        tag, _, weight = part.strip().partition(";q=")
        try:
            wanted.append((float(weight or 1), tag.split("-")[0].lower()))
        except ValueError:
            continue
    for _, code in sorted(wanted, reverse=True):
        if code in LANGUAGES:
            return code
    return DEFAULT


@dataclass(frozen=True)
class Texts:
    """What a template writes with: `_`, `ngettext`, numbers and local times in one language."""

    language: str

    def gettext(self, message: str) -> str:
        return translations(self.language).gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return translations(self.language).ngettext(singular, plural, n) % {"n": self.number(n)}

    def number(self, value: int) -> str:
        return format_decimal(value, locale=self.language)

    def when(self, stored: str | None) -> str:
        """A stored local time (`Y-m-d H:i:s`) as the language writes one."""
        if not stored:
            return ""
        moment = datetime.strptime(stored, _STORED)
        return format_datetime(moment, "medium", locale=self.language)

    def context(self) -> dict[str, object]:
        """The template variables."""
        return {
            "_": self.gettext,
            "ngettext": self.ngettext,
            "number": self.number,
            "when": self.when,
            "language": self.language,
            "languages": LANGUAGES,
        }
