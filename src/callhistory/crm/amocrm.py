"""amoCRM (Kommo) API v4: `POST /api/v4/calls` in batches, OAuth 2 tokens.

Mapping: direction from the call type (internal calls are not pushed); `phone` = the outside
party; `duration` = the conversation; `link` = the signed recording URL; `call_status` 4 when
answered, 7 busy, 6 otherwise; `created_at` = the start; `uniq` = our call_id, so amoCRM refuses a
call pushed twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from callhistory.crm.client import CrmAuthError, PushResult, Tokens, TransientCrmError
from callhistory.models import CallStatus, CallType
from callhistory.store import AnyRow

SOURCE = "callhistory"
STATUS_CONVERSATION, STATUS_NOT_REACHED, STATUS_BUSY = 4, 6, 7


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or f"HTTP {response.status_code}")
    return f"HTTP {response.status_code}"


class AmoCrmClient:
    name = "amocrm"
    max_batch = 50

    def __init__(self, base_url: str, timeout: float = 15.0, http: httpx.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self.http = http or httpx.Client(timeout=timeout)

    def payload(self, call: AnyRow, request_id: str, link: str | None) -> dict[str, Any] | None:
        call_type = CallType(call.type)
        if call_type is CallType.INTERNAL:
            return None
        incoming = call_type is CallType.INCOMING
        if call.status == CallStatus.ANSWERED:
            status = STATUS_CONVERSATION
        elif call.disposition == "BUSY":
            status = STATUS_BUSY
        else:
            status = STATUS_NOT_REACHED
        body: dict[str, Any] = {
            "direction": "inbound" if incoming else "outbound",
            "uniq": call.call_id,
            "duration": int(call.conversation),
            "source": SOURCE,
            "phone": call.src if incoming else call.dst,
            "call_status": status,
            "call_result": call.disposition,
            "created_at": int(call.started_at.replace(tzinfo=UTC).timestamp()),
            "request_id": request_id,
        }
        if link:
            body["link"] = link
        return body

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.post(f"{self.base_url}{path}", **kwargs)
        except httpx.TimeoutException as exc:
            raise TransientCrmError(f"amoCRM timed out ({exc.__class__.__name__})") from None
        except httpx.TransportError as exc:
            raise TransientCrmError(f"amoCRM unreachable ({exc.__class__.__name__})") from None

    def push(self, access_token: str, payloads: Sequence[dict[str, Any]]) -> list[PushResult]:
        response = self._post(
            "/api/v4/calls",
            json=list(payloads),
            headers={"Authorization": f"Bearer {access_token}"},
        )
        status = response.status_code
        if status == 401:
            raise CrmAuthError(_problem(response))
        if status == 429 or status >= 500:
            raise TransientCrmError(
                f"amoCRM answered {status}: {_problem(response)}", _retry_after(response)
            )
        if status == 400:
            return self._per_call_errors(response, payloads)
        if not 200 <= status < 300:
            raise TransientCrmError(f"amoCRM answered {status}: {_problem(response)}")
        try:
            embedded = response.json()["_embedded"]["calls"]
            accepted = {str(c["request_id"]): str(c["id"]) for c in embedded}
        except (ValueError, KeyError, TypeError):
            raise TransientCrmError("amoCRM answered 200 without _embedded.calls") from None
        return [
            PushResult(p["request_id"], external_id=accepted[p["request_id"]])
            if p["request_id"] in accepted
            else PushResult(p["request_id"], error="amoCRM did not return this call")
            for p in payloads
        ]

    def _per_call_errors(
        self, response: httpx.Response, payloads: Sequence[dict[str, Any]]
    ) -> list[PushResult]:
        """A 400 names the calls it refused; the others are left to be pushed again."""
        try:
            problems = response.json().get("validation-errors") or []
            refused = {
                str(p["request_id"]): "; ".join(
                    str(e.get("detail") or e.get("code")) for e in p.get("errors", [])
                )
                or _problem(response)
                for p in problems
            }
        except (ValueError, KeyError, TypeError, AttributeError):
            refused = {}
        if not refused:
            # A 400 for the batch as a whole: nothing to single out; it will not get better.
            return [PushResult(p["request_id"], error=_problem(response)) for p in payloads]
        return [
            PushResult(p["request_id"], error=refused[p["request_id"]])
            if p["request_id"] in refused
            else PushResult(p["request_id"])  # the others: push again without the refused ones
            for p in payloads
        ]

    def _token_request(self, form: dict[str, str]) -> Tokens:
        response = self._post("/oauth2/access_token", json=form)
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientCrmError(f"amoCRM OAuth answered {response.status_code}")
        if response.status_code != 200:
            raise CrmAuthError(f"amoCRM OAuth refused: {_problem(response)}")
        body = response.json()
        return Tokens(
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            expires_at=datetime.now(UTC).replace(tzinfo=None)
            + timedelta(seconds=int(body.get("expires_in", 86400))),
        )

    def _oauth_form(self, secrets: dict[str, Any]) -> dict[str, str]:
        return {
            "client_id": secrets["client_id"],
            "client_secret": secrets["client_secret"],
            "redirect_uri": secrets["redirect_uri"],
        }

    def exchange_code(self, secrets: dict[str, Any], code: str) -> Tokens:
        form = self._oauth_form(secrets) | {"grant_type": "authorization_code", "code": code}
        return self._token_request(form)

    def refresh(self, secrets: dict[str, Any]) -> Tokens:
        form = self._oauth_form(secrets) | {
            "grant_type": "refresh_token",
            "refresh_token": secrets["refresh_token"],
        }
        return self._token_request(form)
