"""The sync worker: pending call_integrations rows → the CRM, in order, in batches, politely.

Per integration: lease a batch of due rows, push it (at most `rate` requests a second), settle
each row (`synced`, or `failed` with the CRM's own message); a transient failure (429, 5xx,
timeout, connection) puts the batch back with exponential backoff and jitter until the retry
budget runs out. OAuth tokens are refreshed before they expire or on a 401, one refresh at a time,
the new refresh token committed before the new access token is used.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from callhistory import crmstore
from callhistory.config import Settings
from callhistory.crm.amocrm import AmoCrmClient
from callhistory.crm.client import CrmAuthError, CrmClient, PushResult, TransientCrmError
from callhistory.crypto import SecretsUnreadable, seal, unseal
from callhistory.retry import backoff_delay
from callhistory.signing import recording_url
from callhistory.store import AnyRow, utcnow

log = logging.getLogger("callhistory.sync")


@dataclass
class SyncSettings:
    rate: float = 7.0  # requests per second per integration (amoCRM's limit)
    batch: int = 50
    lease_seconds: float = 300.0
    settle_seconds: float = 30.0  # a call must not have changed for this long (more legs?)
    retry_budget: int = 8
    backoff_initial: float = 5.0
    backoff_max: float = 3600.0
    idle_seconds: float = 2.0
    refresh_margin: float = 300.0  # refresh an OAuth token this long before it expires

    @classmethod
    def from_settings(cls, settings: Settings) -> SyncSettings:
        return cls(
            rate=settings.sync_rate,
            settle_seconds=settings.sync_settle_seconds,
            lease_seconds=settings.sync_lease_seconds,
            retry_budget=settings.sync_retry_budget,
        )


class RateLimiter:
    """At most `rate` acquisitions in any sliding window of `window` seconds, across threads.

    The window is a little over a second: requests reach the CRM with varying network delay, and
    it counts by its own clock."""

    def __init__(
        self, rate: float, window: float = 1.1, clock: Callable[[], float] = time.monotonic
    ):
        self.limit = max(int(rate), 1)
        self.window = window
        self.clock = clock
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                while self._times and now - self._times[0] >= self.window:
                    self._times.popleft()
                if len(self._times) < self.limit:
                    self._times.append(now)
                    return
                wait = self.window - (now - self._times[0])
            time.sleep(max(wait, 0.001))


def default_client(integration: AnyRow) -> CrmClient:
    if integration.integration_type == "amocrm":
        return AmoCrmClient(integration.base_url)
    raise ValueError(f"no client for {integration.integration_type}")


class SyncWorker:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        sync: SyncSettings | None = None,
        client_for: Callable[[AnyRow], CrmClient] = default_client,
    ):
        self.engine, self.settings = engine, settings
        self.sync = sync or SyncSettings.from_settings(settings)
        self.client_for = client_for
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self._limiters: dict[int, RateLimiter] = {}
        self._clients: dict[int, CrmClient] = {}
        self._refresh_lock = threading.Lock()

    # --- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        log.info("sync worker %s started", self.owner)
        while not stop.is_set():
            try:
                done = self.run_once()
            except Exception:
                log.exception("sync pass failed; trying again shortly")
                done = 0
            if not done:
                stop.wait(self.sync.idle_seconds)
        log.info("sync worker %s stopped", self.owner)

    def drain(self, max_passes: int = 10_000) -> int:
        """Pass until nothing is due; returns the rows handled."""
        total = 0
        for _ in range(max_passes):
            done = self.run_once()
            if not done:
                break
            total += done
        return total

    def run_once(self) -> int:
        """One batch per connected integration; the number of rows handled."""
        with self.engine.connect() as conn:
            connected = crmstore.all_integrations(conn)
        return sum(self._one_batch(integration) for integration in connected)

    # --- one batch --------------------------------------------------------------------------

    def _client(self, integration: AnyRow) -> CrmClient:
        if integration.id not in self._clients:
            self._clients[integration.id] = self.client_for(integration)
        return self._clients[integration.id]

    def _limiter(self, integration_id: int) -> RateLimiter:
        if integration_id not in self._limiters:
            self._limiters[integration_id] = RateLimiter(self.sync.rate)
        return self._limiters[integration_id]

    def _link(self, call: AnyRow) -> str | None:
        if not call.recording or not self.settings.public_url:
            return None
        return recording_url(
            self.settings.public_url,
            call.account_id,
            call.recording,
            self.settings.signing_key,
            self.settings.recording_url_ttl,
        )

    def _one_batch(self, integration: AnyRow) -> int:
        client = self._client(integration)
        with self.engine.begin() as conn:
            rows = crmstore.claim(
                conn,
                integration,
                self.owner,
                utcnow(),
                lease=timedelta(seconds=self.sync.lease_seconds),
                settle=timedelta(seconds=self.sync.settle_seconds),
                limit=min(self.sync.batch, client.max_batch),
            )
        if not rows:
            return 0
        by_request = {str(row.row_id): row for row in rows}
        payloads: list[dict[str, Any]] = []
        settled: list[tuple[int, str | None, str | None]] = []
        for request_id, row in by_request.items():
            body = client.payload(row, request_id, self._link(row))
            if body is None:
                settled.append((row.row_id, None, "internal calls are not pushed"))
            else:
                payloads.append(body)
        try:
            settled += self._push(integration, client, payloads)
        except (TransientCrmError, CrmAuthError, SecretsUnreadable) as exc:
            self._later(integration, rows, exc)
        with self.engine.begin() as conn:
            crmstore.settle(conn, integration.account_id, self.owner, settled)
        return len(rows)

    def _push(
        self, integration: AnyRow, client: CrmClient, payloads: list[dict[str, Any]]
    ) -> list[tuple[int, str | None, str | None]]:
        """Push until every call is decided; calls a 400 left undecided go again (3 rounds)."""
        settled: list[tuple[int, str | None, str | None]] = []
        for _round in range(3):
            if not payloads:
                break
            results = self._push_with_token(integration, client, payloads)
            undecided: set[str] = set()
            for result in results:
                if result.external_id is None and result.error is None:
                    undecided.add(result.request_id)
                else:
                    settled.append((int(result.request_id), result.external_id, result.error))
            payloads = [p for p in payloads if p["request_id"] in undecided]
        if payloads:
            raise TransientCrmError("the CRM kept leaving calls undecided")
        return settled

    def _push_with_token(
        self, integration: AnyRow, client: CrmClient, payloads: Sequence[dict[str, Any]]
    ) -> list[PushResult]:
        token = self._access_token(integration.id, client)
        self._limiter(integration.id).acquire()
        try:
            return client.push(token, payloads)
        except CrmAuthError:
            refreshed = self._access_token(integration.id, client, rejected=token)
            if refreshed == token:
                raise
            self._limiter(integration.id).acquire()
            return client.push(refreshed, payloads)

    def _later(self, integration: AnyRow, rows: Sequence[AnyRow], exc: Exception) -> None:
        attempts = max((row.attempts for row in rows), default=0)
        delay = backoff_delay(attempts, self.sync.backoff_initial, self.sync.backoff_max)
        if isinstance(exc, TransientCrmError) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        message = str(exc) or exc.__class__.__name__
        log.warning("CRM push failed (%s); %d calls retry in %.0fs", message, len(rows), delay)
        with self.engine.begin() as conn:
            crmstore.retry_later(
                conn,
                integration.account_id,
                self.owner,
                [row.row_id for row in rows],
                message,
                utcnow() + timedelta(seconds=delay),
                self.sync.retry_budget,
            )

    # --- tokens -----------------------------------------------------------------------------

    def _access_token(
        self, integration_id: int, client: CrmClient, rejected: str | None = None
    ) -> str:
        """A usable access token: the stored one, or a fresh one when it is about to expire or
        was just `rejected`. One refresh at a time, here and across processes (row lock)."""
        key = self.settings.signing_key
        with self.engine.connect() as conn:
            integration = crmstore.get(conn, integration_id)
        secrets = unseal(key, integration.secrets)
        if integration.auth != "oauth" or not self._needs_refresh(integration, secrets, rejected):
            return str(secrets["access_token"])
        with self._refresh_lock, self.engine.begin() as conn:
            integration = crmstore.lock_integration(conn, integration_id)
            secrets = unseal(key, integration.secrets)
            if not self._needs_refresh(integration, secrets, rejected):
                return str(secrets["access_token"])  # another worker refreshed meanwhile
            tokens = client.refresh(secrets)
            secrets |= {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token}
            # Committed as this block ends, before the new access token is first used.
            crmstore.save_secrets(conn, integration_id, seal(key, secrets), tokens.expires_at)
            log.info("refreshed the OAuth token of integration %d", integration_id)
            return tokens.access_token

    def _needs_refresh(
        self, integration: AnyRow, secrets: dict[str, Any], rejected: str | None
    ) -> bool:
        if rejected is not None:
            return bool(secrets["access_token"] == rejected)
        expires = integration.access_expires_at
        margin = timedelta(seconds=self.sync.refresh_margin)
        return expires is None or expires <= utcnow() + margin


def sync_once_connected(
    engine: Engine, settings: Settings, stop: threading.Event, poll_seconds: float = 30.0
) -> None:
    """For `serve`: look (cheaply, every `poll_seconds`) for a connected CRM; from the first one
    on, run the worker until `stop`. Nothing is scheduled while no account has a CRM."""
    while not stop.is_set():
        try:
            with engine.connect() as conn:
                connected = crmstore.any_integration(conn)
        except Exception:
            log.exception("cannot look for connected CRMs; trying again later")
            connected = False
        if connected:
            SyncWorker(engine, settings).run(stop)
            return
        stop.wait(poll_seconds)
