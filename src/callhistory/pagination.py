"""Laravel's LengthAwarePaginator envelope and its page window (`onEachSide = 3`). Pure."""

from __future__ import annotations

from typing import Any

from callhistory import phpquery

ON_EACH_SIDE = 3
PREVIOUS_LABEL = "« Previous"
NEXT_LABEL = "Next »"

#: A window is a list of page numbers, with None for each "..." gap.
Window = list[int | None]


def last_page(total: int, per_page: int) -> int:
    return max(-(-total // per_page), 1)


def window(current: int, last: int, on_each_side: int = ON_EACH_SIDE) -> Window:
    """Laravel's UrlWindow: which page links to show, with None for a gap."""
    size = on_each_side + 4  # Laravel's "window": the pages shown next to either end
    if last < on_each_side * 2 + 8:
        return list(range(1, last + 1))
    if current <= size:
        return [*range(1, size + on_each_side + 1), None, last - 1, last]
    if current > last - size:
        return [1, 2, None, *range(last - (size + on_each_side - 1), last + 1)]
    return [
        1,
        2,
        None,
        *range(current - on_each_side, current + on_each_side + 1),
        None,
        last - 1,
        last,
    ]


def page_url(path: str, params: phpquery.PhpArray, page: int) -> str:
    """`path?query` keeping the request's own parameters, with `page` last."""
    query = {k: v for k, v in params.items() if k != "page"}
    query["page"] = page
    return f"{path}?{phpquery.build(query)}"


def envelope(
    data: list[dict[str, Any]],
    *,
    total: int,
    page: int,
    per_page: int,
    path: str,
    params: phpquery.PhpArray,
) -> dict[str, Any]:
    last = last_page(total, per_page)
    first_item = (page - 1) * per_page + 1 if data else None
    prev_url = page_url(path, params, page - 1) if page > 1 else None
    next_url = page_url(path, params, page + 1) if page < last else None
    links: list[dict[str, Any]] = [{"url": prev_url, "label": PREVIOUS_LABEL, "active": False}]
    for number in window(page, last):
        if number is None:
            links.append({"url": None, "label": "...", "active": False})
        else:
            links.append(
                {
                    "url": page_url(path, params, number),
                    "label": str(number),
                    "active": number == page,
                }
            )
    links.append({"url": next_url, "label": NEXT_LABEL, "active": False})
    return {
        "data": data,
        "links": {
            "first": page_url(path, params, 1),
            "last": page_url(path, params, last),
            "prev": prev_url,
            "next": next_url,
        },
        "meta": {
            "current_page": page,
            "from": first_item,
            "last_page": last,
            "links": links,
            "path": path,
            "per_page": per_page,
            "to": first_item + len(data) - 1 if first_item is not None else None,
            "total": total,
        },
    }
