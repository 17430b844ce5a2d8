"""A fake amoCRM on loopback that behaves like the real API v4 for what we use.

`POST /api/v4/calls`: checks the bearer token (401 for an expired one), the body's schema (a JSON
array of calls with the required fields and types), 429 past 7 requests in any second; answers 200
with `_embedded.calls[]` echoing `request_id`, or 400 with `validation-errors` for calls whose
phone matches no contact (by its last 10 digits). A `uniq` already stored is not stored again.
`POST /oauth2/access_token`: authorization_code and refresh_token grants; each refresh issues a new
refresh token and revokes the old one. Faults on demand: `fail_next` (status codes, or "timeout").
"""

from __future__ import annotations

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REQUIRED = {"direction": str, "duration": int, "source": str, "phone": str}
OPTIONAL = {
    "uniq": str,
    "link": str,
    "call_result": str,
    "call_status": int,
    "created_at": int,
    "request_id": str,
    "responsible_user_id": int,
    "created_by": int,
}


class FakeAmoCrm:
    def __init__(self, known_phones: set[str] | None = None, rate_limit: int = 7):
        self.known_phones = {p[-10:] for p in (known_phones or set())}
        self.rate_limit = rate_limit
        self.valid_tokens: set[str] = {"long-lived-token"}
        self.expired_tokens: set[str] = set()
        self.refresh_tokens: dict[str, str] = {}  # refresh token → client_id
        self.codes = {"good-code"}
        self.client = ("client-1", "secret-1", "https://crm.example/redirect")
        self.fail_next: list[int | str] = []
        self.delay = 0.0
        self.requests: list[tuple[float, str, Any]] = []  # (time, path, body) of calls requests
        self.responses: collections.Counter[int] = collections.Counter()
        self.stored: dict[str, int] = {}  # uniq → our id
        self.duplicates = 0
        self.refreshes = 0
        self._lock = threading.Lock()
        self._recent: collections.deque[float] = collections.deque()
        self._issued = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeAmoCrm:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def max_requests_in_a_second(self) -> int:
        times = sorted(t for t, path, _ in self.requests if path == "/api/v4/calls")
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= 1.0:
                start += 1
            best = max(best, end - start + 1)
        return best

    def issue_tokens(self) -> dict[str, Any]:
        self._issued += 1
        access, refresh = f"access-{self._issued}", f"refresh-{self._issued}"
        self.valid_tokens.add(access)
        self.refresh_tokens[refresh] = self.client[0]
        return {"token_type": "Bearer", "expires_in": 86400, "access_token": access,
                "refresh_token": refresh}  # fmt: skip

    # --- the API ------------------------------------------------------------------------------

    def calls(self, token: str, body: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            now = time.monotonic()
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            self._recent.append(now)
            if len(self._recent) > self.rate_limit:
                return 429, {"title": "Too Many Requests", "status": 429}
            fault = self.fail_next.pop(0) if self.fail_next else None
        if fault == "timeout":
            time.sleep(2.0)  # longer than the client waits
            return 504, {"title": "Gateway Timeout", "status": 504}
        if fault is not None:
            return int(fault), {"title": "Internal Server Error", "status": int(fault)}
        if token in self.expired_tokens or token not in self.valid_tokens:
            return 401, {"title": "Unauthorized", "status": 401, "detail": "Token has expired"}
        if not isinstance(body, list) or not body:
            return 400, {"title": "Bad Request", "status": 400, "detail": "a non-empty array"}
        problems, accepted = [], []
        for index, item in enumerate(body):
            errors = self._schema_errors(index, item)
            rid = str(item.get("request_id", index)) if isinstance(item, dict) else str(index)
            if not errors and item["phone"][-10:] not in self.known_phones:
                errors = [{"code": "NotFound", "path": "phone",
                           "detail": "Contact with this phone number not found"}]  # fmt: skip
            if errors:
                problems.append({"request_id": rid, "errors": errors})
            else:
                accepted.append((rid, item))
        if problems:
            return 400, {"title": "Bad Request", "type": "https://httpstatus.es/400",
                         "status": 400, "detail": "Request validation failed",
                         "validation-errors": problems}  # fmt: skip
        out = []
        with self._lock:
            for rid, item in accepted:
                uniq = item.get("uniq") or f"anon-{len(self.stored)}"
                if uniq in self.stored:
                    self.duplicates += 1
                else:
                    self.stored[uniq] = 1000 + len(self.stored)
                out.append({"id": self.stored[uniq], "entity_id": 7, "entity_type": "contacts",
                            "request_id": rid})  # fmt: skip
        return 200, {"_total_items": len(out), "_embedded": {"calls": out}}

    @staticmethod
    def _schema_errors(index: int, item: Any) -> list[dict[str, str]]:
        if not isinstance(item, dict):
            return [{"code": "InvalidType", "path": str(index), "detail": "an object"}]
        errors = []
        for name, kind in REQUIRED.items():
            if name not in item:
                errors.append({"code": "NotBlank", "path": name, "detail": "required"})
            elif not isinstance(item[name], kind) or isinstance(item[name], bool):
                errors.append({"code": "InvalidType", "path": name, "detail": kind.__name__})
        for name, kind in OPTIONAL.items():
            if name in item and (not isinstance(item[name], kind) or isinstance(item[name], bool)):
                errors.append({"code": "InvalidType", "path": name, "detail": kind.__name__})
        if item.get("direction") not in ("inbound", "outbound"):
            errors.append(
                {"code": "InvalidChoice", "path": "direction", "detail": "inbound|outbound"}
            )
        return errors

    def oauth(self, body: Any) -> tuple[int, dict[str, Any]]:
        client_id, secret, redirect = self.client
        if (body.get("client_id"), body.get("client_secret"), body.get("redirect_uri")) != (
            client_id, secret, redirect,
        ):  # fmt: skip
            return 401, {"title": "Unauthorized", "hint": "Client authentication failed"}
        with self._lock:
            if body.get("grant_type") == "authorization_code" and body.get("code") in self.codes:
                self.codes.discard(body["code"])
                return 200, self.issue_tokens()
            if (
                body.get("grant_type") == "refresh_token"
                and body.get("refresh_token") in self.refresh_tokens
            ):
                del self.refresh_tokens[body["refresh_token"]]  # a refresh token works once
                self.refreshes += 1
                return 200, self.issue_tokens()
        return 400, {"title": "Bad Request", "hint": "Token has been revoked"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                if self.path == "/api/v4/calls":
                    fake.requests.append((time.monotonic(), self.path, body))
                if fake.delay:
                    time.sleep(fake.delay)
                if self.path == "/api/v4/calls":
                    token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    status, answer = fake.calls(token, body)
                elif self.path == "/oauth2/access_token":
                    status, answer = fake.oauth(body if isinstance(body, dict) else {})
                else:
                    status, answer = 404, {"title": "Not Found"}
                fake.responses[status] += 1
                data = json.dumps(answer).encode()
                self.send_response(status)
                content_type = "application/json" if status == 200 else "application/problem+json"
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(data)

        return Handler
