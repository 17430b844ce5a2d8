import pytest

from callhistory import phpquery


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", {}),
        (b"page=2", {"page": "2"}),
        (b"a=1&a=2", {"a": "2"}),
        (b"filter[src]=100", {"filter": {"src": "100"}}),
        (b"filter%5Bsrc%5D=100", {"filter": {"src": "100"}}),
        (b"filter[src]=a&filter[dst]=b", {"filter": {"src": "a", "dst": "b"}}),
        (b"filter[type][]=1&filter[type][]=2", {"filter": {"type": {"0": "1", "1": "2"}}}),
        (b"filter=x", {"filter": "x"}),
        (b"filter=x&filter[src]=1", {"filter": {"src": "1"}}),
        (b"filter[src]=1&filter=x", {"filter": "x"}),
        (b"per_page=+&sort=", {"per_page": None, "sort": None}),  # trimmed, empty -> null
        (b"q=%20a%20b%20", {"q": "a b"}),
        (b"q=a+b", {"q": "a b"}),
        (b"[x]=1&=2", {}),
        (b"a[b=1", {"a_b": "1"}),
        (b"a[b]junk=1", {"a": {"b": "1"}}),
        (b"a[b][c][d][e][f][g][h][i]=1", {}),  # deeper than PHP keeps
        (b"q=%ff%fe", {"q": "\ufffd\ufffd"}),  # invalid UTF-8 never raises
        (b"q=\xff", {"q": "\ufffd"}),
        (b"flag", {"flag": None}),
        (b"&&a=1&&", {"a": "1"}),
    ],
)
def test_parse(raw: bytes, expected: dict[str, object]) -> None:
    assert phpquery.parse(raw) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ""),
        ({"page": 2}, "page=2"),
        ({"sort": "-id", "filter": {"type": "2"}, "page": 2}, "sort=-id&filter%5Btype%5D=2&page=2"),
        ({"filter": {"from": "2026-01-13 00:00:00"}}, "filter%5Bfrom%5D=2026-01-13%2000%3A00%3A00"),
        ({"filter": {"src": "1,2"}}, "filter%5Bsrc%5D=1%2C2"),
        ({"a": None, "b": "x~y"}, "b=x~y"),
        ({"f": {"t": {"0": "1", "1": "2"}}}, "f%5Bt%5D%5B0%5D=1&f%5Bt%5D%5B1%5D=2"),
        ({"q": "ä&="}, "q=%C3%A4%26%3D"),
    ],
)
def test_build(params: phpquery.PhpArray, expected: str) -> None:
    assert phpquery.build(params) == expected


def test_round_trip_keeps_order() -> None:
    raw = b"filter[type]=2&sort=-id&filter[src]=1&page=3"
    assert (
        phpquery.build(phpquery.parse(raw))
        == "filter%5Btype%5D=2&filter%5Bsrc%5D=1&sort=-id&page=3"
    )
