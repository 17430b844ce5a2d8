"""Signed recording URLs: HMAC-SHA256 with the app key over the account, the path (and `expires`).

The account is part of what is signed: the same relative path names a different file in each
account's recordings root, so a signature for one account's path must not open another's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from urllib.parse import quote


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


#: What `quote` leaves as it is: a path made only of these needs no quoting (the usual one).
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~/-]*")


def recording_url(base_url: str, account_id: int, recording: str, key: bytes, ttl: int = 0) -> str:
    """`{base}/storage/monitor/{recording}?account=..&[expires=..&]signature=..`. Built by hand
    (a list page signs 20): the values are digits and hex, which urlencode would not change."""
    expires = int(time.time()) + ttl if ttl > 0 else None
    path = recording if _UNQUOTED.fullmatch(recording) else quote(recording)
    signed = signature(key, account_id, recording, expires)
    if expires is None:
        return f"{base_url}/storage/monitor/{path}?account={account_id}&signature={signed}"
    return (
        f"{base_url}/storage/monitor/{path}?account={account_id}&expires={expires}"
        f"&signature={signed}"
    )
