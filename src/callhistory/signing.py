"""Signed recording URLs: HMAC-SHA256 with the app key over the path (and `expires`)."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode


def signature(key: bytes, path: str, expires: int | None = None) -> str:
    message = path if expires is None else f"{path}\n{expires}"
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def verify(
    key: bytes, path: str, given: str, expires: int | None, now: float | None = None
) -> bool:
    """True when `given` signs `path` (and `expires`, not yet past). Constant-time comparison."""
    if expires is not None and expires < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(signature(key, path, expires), given)


def recording_url(base_url: str, recording: str, key: bytes, ttl: int = 0) -> str:
    """`{base}/storage/monitor/{recording}?[expires=..&]signature=..`; `recording` is relative."""
    expires = int(time.time()) + ttl if ttl > 0 else None
    query: dict[str, str | int] = {} if expires is None else {"expires": expires}
    query["signature"] = signature(key, recording, expires)
    return f"{base_url}/storage/monitor/{quote(recording)}?{urlencode(query)}"
