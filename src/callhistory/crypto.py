"""Secrets at rest (CRM tokens), encrypted with a key derived from the app key (Fernet)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class SecretsUnreadable(Exception):
    """Encrypted with another app key (it was rotated): the integration must be reconnected."""


def _fernet(app_key: bytes) -> Fernet:
    digest = hashlib.sha256(b"callhistory secrets v1\0" + app_key).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(app_key: bytes, secrets: dict[str, Any]) -> str:
    return _fernet(app_key).encrypt(json.dumps(secrets).encode()).decode()


def unseal(app_key: bytes, sealed: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(_fernet(app_key).decrypt(sealed.encode()))
    except InvalidToken:
        raise SecretsUnreadable("the secrets were sealed with another APP_KEY") from None
    return data
