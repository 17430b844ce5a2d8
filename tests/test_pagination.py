import pytest

from callhistory import pagination


@pytest.mark.parametrize(
    ("current", "last", "expected"),
    [
        (1, 1, [1]),
        (1, 5, [1, 2, 3, 4, 5]),
        (7, 13, list(range(1, 14))),
        (1, 14, [*range(1, 11), None, 13, 14]),
        (7, 14, [*range(1, 11), None, 13, 14]),
        (8, 14, [1, 2, None, *range(5, 15)]),
        (1, 50, [*range(1, 11), None, 49, 50]),
        (7, 50, [*range(1, 11), None, 49, 50]),
        (8, 50, [1, 2, None, 5, 6, 7, 8, 9, 10, 11, None, 49, 50]),
        (25, 50, [1, 2, None, 22, 23, 24, 25, 26, 27, 28, None, 49, 50]),
        (43, 50, [1, 2, None, 40, 41, 42, 43, 44, 45, 46, None, 49, 50]),
        (44, 50, [1, 2, None, *range(41, 51)]),
        (50, 50, [1, 2, None, *range(41, 51)]),
        (60, 50, [1, 2, None, *range(41, 51)]),  # past the end: the end's window
        (1000, 2000, [1, 2, None, *range(997, 1004), None, 1999, 2000]),
    ],
)
def test_window(current: int, last: int, expected: list[int | None]) -> None:
    assert pagination.window(current, last) == expected


@pytest.mark.parametrize(
    ("total", "per_page", "expected"),
    [(0, 20, 1), (1, 20, 1), (20, 20, 1), (21, 20, 2), (747, 15, 50), (747, 300, 3)],
)
def test_last_page(total: int, per_page: int, expected: int) -> None:
    assert pagination.last_page(total, per_page) == expected


def test_envelope_of_an_empty_page_past_the_end() -> None:
    body = pagination.envelope(
        [], total=3, page=4, per_page=2, path="https://x/api/v1/call-history", params={"page": "4"}
    )
    url = "https://x/api/v1/call-history?page="
    assert body == {
        "data": [],
        "links": {"first": url + "1", "last": url + "2", "prev": url + "3", "next": None},
        "meta": {
            "current_page": 4,
            "from": None,
            "last_page": 2,
            "links": [
                {"url": url + "3", "label": "« Previous", "active": False},
                {"url": url + "1", "label": "1", "active": False},
                {"url": url + "2", "label": "2", "active": False},
                {"url": None, "label": "Next »", "active": False},
            ],
            "path": "https://x/api/v1/call-history",
            "per_page": 2,
            "to": None,
            "total": 3,
        },
    }


def test_page_url_keeps_the_query_and_puts_page_last() -> None:
    params = {"page": "9", "sort": "-id", "filter": {"type": "2"}}
    assert (
        pagination.page_url("https://x/p", params, 2)
        == "https://x/p?sort=-id&filter%5Btype%5D=2&page=2"
    )
