"""Signed recording URLs: HMAC-SHA256 with the app key over the account, the path (and `expires`).

The account is part of what is signed: the same relative path names a different file in each
account's recordings root, so a signature for one account's path must not open another's.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode


def signature(key: bytes, account_id: int, path: str, expires: int | None = None) -> str:
    message = f"{account_id}\n{path}" if expires is None else f"{account_id}\n{path}\n{expires}"
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def verify(
    key: bytes,
    account_id: int,
    path: str,
    given: str,
    expires: int | None,
    now: float | None = None,
) -> bool:
    """True when `given` signs `account_id` and `path` (and `expires`, not yet past), compared in
    constant time."""
    if expires is not None and expires < (time.time() if now is None else now):
        return False
    # As bytes: compare_digest refuses str with non-ASCII characters (a 500, found by fuzzing).
    expected = signature(key, account_id, path, expires).encode()
    return hmac.compare_digest(expected, given.encode("utf-8", "replace"))


def recording_url(base_url: str, account_id: int, recording: str, key: bytes, ttl: int = 0) -> str:
    """`{base}/storage/monitor/{recording}?account=..&[expires=..&]signature=..`."""
    expires = int(time.time()) + ttl if ttl > 0 else None
    query: dict[str, str | int] = {"account": account_id}
    if expires is not None:
        query["expires"] = expires
    query["signature"] = signature(key, account_id, recording, expires)
    return f"{base_url}/storage/monitor/{quote(recording)}?{urlencode(query)}"
