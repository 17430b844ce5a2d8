"""What the sync worker needs from a CRM: one small interface, one module per CRM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from callhistory.store import AnyRow


@dataclass(frozen=True)
class PushResult:
    """The CRM's answer for one call of a batch (request_id = our call_integrations.id)."""

    request_id: str
    external_id: str | None = None  # set when the CRM accepted the call
    error: str | None = None  # the CRM's own message when it refused this call
    # Neither: not decided in this request (its batch had refused calls); push it again.


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_at: datetime


class TransientCrmError(Exception):
    """Worth retrying later: rate limited, server error, timeout, connection trouble."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class CrmAuthError(Exception):
    """The CRM refused the access token (expired or revoked)."""


class CrmClient(Protocol):
    name: str
    max_batch: int

    def payload(self, call: AnyRow, request_id: str, link: str | None) -> dict[str, Any] | None:
        """The CRM's body for one call, or None when this call is not pushed (internal)."""

    def push(self, access_token: str, payloads: Sequence[dict[str, Any]]) -> list[PushResult]:
        """Push one batch; raises TransientCrmError or CrmAuthError for the batch as a whole."""

    def exchange_code(self, secrets: dict[str, Any], code: str) -> Tokens: ...

    def refresh(self, secrets: dict[str, Any]) -> Tokens: ...
