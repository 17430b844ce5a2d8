"""A one-sheet XLSX workbook written as it goes: the sheet's rows are XML streamed into a zip
(stream-zip, 32-bit entries with data descriptors, which Excel reads), so an export of any
number of rows starts at once and takes the same memory. Cells are inline strings or numbers;
no shared strings, no styles."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from xml.sax.saxutils import escape

from stream_zip import ZIP_32, stream_zip

#: Excel's rows per sheet, the header included.
MAX_ROWS = 1_048_576
#: Characters XML 1.0 cannot carry (controls other than tab, newline, carriage return).
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml"

_PARTS = {
    "[Content_Types].xml": (
        f'{_HEAD}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{_TYPE}.sheet.main+xml"/>'
        f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{_TYPE}.worksheet+xml"/>'
        "</Types>"
    ),
    "_rels/.rels": (
        f'{_HEAD}<Relationships xmlns="{_RELS}"><Relationship Id="rId1" '
        f'Type="{_DOC}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
    ),
    "xl/_rels/workbook.xml.rels": (
        f'{_HEAD}<Relationships xmlns="{_RELS}"><Relationship Id="rId1" '
        f'Type="{_DOC}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
    ),
}

Cell = str | int | None


def _cell(value: Cell) -> str:
    if value is None or value == "":
        return "<c/>"
    if isinstance(value, int):
        return f"<c><v>{value}</v></c>"
    text = escape(_NOT_XML.sub("", value))
    return f'<c t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'


def _sheet(header: Sequence[str], batches: Iterable[Iterable[Sequence[Cell]]]) -> Iterator[bytes]:
    """The sheet's XML: the header row, then the rows (at most Excel's limit), a batch a chunk."""
    head = "".join(_cell(name) for name in header)
    yield f'{_HEAD}<worksheet xmlns="{_MAIN}"><sheetData><row>{head}</row>'.encode()
    room = MAX_ROWS - 1
    for batch in batches:
        rows = []
        for row in batch:
            if room == 0:
                break
            rows.append("<row>" + "".join(_cell(value) for value in row) + "</row>")
            room -= 1
        yield "".join(rows).encode()
        if room == 0:
            break
    yield b"</sheetData></worksheet>"


def workbook(
    sheet_name: str, header: Sequence[str], batches: Iterable[Iterable[Sequence[Cell]]]
) -> Iterator[bytes]:
    """The .xlsx file's bytes, as they are made. `batches` are lists of rows (one chunk each)."""
    now = datetime.now()
    book = (
        f'{_HEAD}<workbook xmlns="{_MAIN}" xmlns:r="{_DOC}"><sheets>'
        f'<sheet name="{escape(sheet_name)}" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    members = [
        *((name, now, 0o600, ZIP_32, (text.encode(),)) for name, text in _PARTS.items()),
        ("xl/workbook.xml", now, 0o600, ZIP_32, (book.encode(),)),
        ("xl/worksheets/sheet1.xml", now, 0o600, ZIP_32, _sheet(header, batches)),
    ]
    yield from stream_zip(members)
