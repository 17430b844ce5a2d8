"""Connecting an account's CRM: credentials checked, secrets sealed, nothing printed."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine

from callhistory import accounts, crmstore
from callhistory.config import Settings
from callhistory.crm.client import CrmClient
from callhistory.crypto import seal


class ConnectError(ValueError):
    pass


def check_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.path not in ("", "/"):
        raise ConnectError(
            f"--base-url must look like https://SUBDOMAIN.amocrm.ru, not {base_url!r}"
        )
    return base_url.rstrip("/")


def connect_amocrm(
    engine: Engine,
    settings: Settings,
    account_id: int,
    base_url: str,
    client: CrmClient,
    *,
    long_lived_token: str | None = None,
    oauth: dict[str, str] | None = None,
    code: str | None = None,
) -> int:
    """Store the account's amoCRM connection; with OAuth the code is exchanged first."""
    base_url = check_base_url(base_url)
    with engine.connect() as conn:
        if not accounts.account_exists(conn, account_id):
            raise ConnectError(f"No account with id {account_id}.")
    secrets: dict[str, Any]
    expires_at: datetime | None = None
    if long_lived_token:
        if oauth or code:
            raise ConnectError("give either --long-lived-token or the OAuth options, not both")
        auth, secrets = "long_lived", {"access_token": long_lived_token}
    else:
        missing = [
            k for k in ("client_id", "client_secret", "redirect_uri") if not (oauth or {}).get(k)
        ]
        if missing or not code:
            raise ConnectError(
                "give --long-lived-token, or --client-id, --client-secret, --redirect-uri "
                "and --code"
            )
        assert oauth is not None
        tokens = client.exchange_code(oauth, code)
        auth = "oauth"
        secrets = dict(oauth) | {
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
        }
        expires_at = tokens.expires_at
    with engine.begin() as conn:
        return crmstore.connect(
            conn,
            account_id,
            "amocrm",
            base_url,
            auth,
            seal(settings.signing_key, secrets),
            expires_at,
        )


def describe(engine: Engine, account_id: int, integration_type: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        found = crmstore.find(conn, account_id, integration_type)
        if found is None:
            return None
        queue = crmstore.queue_counts(conn, found)
    return {
        "id": found.id,
        "account_id": found.account_id,
        "integration_type": found.integration_type,
        "base_url": found.base_url,
        "auth": found.auth,
        "access_expires_at": found.access_expires_at.isoformat()
        if found.access_expires_at
        else None,
        "queue": queue,
        "connected_at": found.created_at.isoformat(),
    }
