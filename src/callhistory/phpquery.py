"""PHP-style query strings, as the Laravel clients of the contract send and expect them.

`filter[src]=100&filter[type][]=2` parses into nested dicts the way PHP fills `$_GET`, with
Laravel's TrimStrings and ConvertEmptyStringsToNull applied; `build` writes such a dict back the
way PHP's `http_build_query(..., PHP_QUERY_RFC3986)` does (`None` values vanish, brackets are
encoded).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote_to_bytes

#: PHP arrays keep insertion order; keys are strings here ("0", "1" for list items).
PhpArray = dict[str, Any]

_SEGMENT = re.compile(r"\[([^\]]*)\]")
_MAX_DEPTH = 8  # deeper keys are dropped, as PHP drops those past max_input_nesting_level
_PHP_TRIM = " \t\n\r\0\x0b"


def _decode(part: bytes) -> str:
    return unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8", errors="replace")


def _key_path(key: str) -> list[str] | None:
    bracket = key.find("[")
    if bracket == -1:
        return [key] if key else None
    base, rest = key[:bracket], key[bracket:]
    if not base:
        return None
    path = [base]
    pos = 0
    while pos < len(rest):
        match = _SEGMENT.match(rest, pos)
        if match is None:
            break  # PHP ignores what follows the last well-formed segment
        path.append(match.group(1))
        pos = match.end()
    if pos == 0:  # "a[b" has no closed segment: PHP keeps it as a plain key "a_b"
        return [key.replace("[", "_", 1)]
    return path if len(path) <= _MAX_DEPTH else None


def _next_index(array: PhpArray) -> str:
    indices = [int(k) for k in array if k.lstrip("-").isdigit()]
    return str(max(indices) + 1) if indices else "0"


def parse(raw: bytes | str) -> PhpArray:
    """Parse a raw query string into PHP's nested arrays; never raises on any input."""
    data = raw.encode("latin-1", errors="replace") if isinstance(raw, str) else raw
    result: PhpArray = {}
    for pair in data.split(b"&"):
        if not pair:
            continue
        raw_key, _, raw_value = pair.partition(b"=")
        path = _key_path(_decode(raw_key))
        if path is None:
            continue
        value: str | None = _decode(raw_value).strip(_PHP_TRIM) or None
        node = result
        for depth, segment in enumerate(path):
            name = segment if segment != "" else _next_index(node)
            if depth == len(path) - 1:
                node[name] = value
            else:
                child = node.get(name)
                if not isinstance(child, dict):
                    child = node[name] = {}
                node = child
    return result


def _encode_pairs(prefix: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        pairs: list[str] = []
        for key, item in value.items():
            pairs += _encode_pairs(f"{prefix}[{key}]", item)
        return pairs
    return [f"{quote(prefix, safe='')}={quote(str(value), safe='')}"]


def build(params: PhpArray) -> str:
    """`http_build_query($params, '', '&', PHP_QUERY_RFC3986)`."""
    pairs: list[str] = []
    for key, value in params.items():
        pairs += _encode_pairs(key, value)
    return "&".join(pairs)
