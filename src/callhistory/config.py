"""Typed settings, read from the environment and an optional `.env` file."""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"), description="where the SQLite file and app key live"
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset means a SQLite file in DATA_DIR"
    )
    public_url: str | None = Field(
        default=None, description="absolute base URL clients see, e.g. https://api.example.com"
    )
    app_key: str | None = Field(
        default=None, description="secret for signed URLs; generated into DATA_DIR when unset"
    )
    recordings_dir: Path | None = Field(
        default=None,
        description="root of the recordings (YYYY/MM/DD/...); default DATA_DIR/recordings",
    )
    recording_url_ttl: int = Field(
        default=0, ge=0, description="seconds a signed recording URL stays valid; 0 = no expiry"
    )
    sync_rate: float = Field(default=7.0, gt=0, description="CRM requests/s per integration")
    sync_settle_seconds: float = Field(
        default=30.0, ge=0, description="push a call once it has not changed for this long"
    )
    sync_lease_seconds: float = Field(
        default=300.0, gt=0, description="a dead worker's batch is taken over after this long"
    )
    sync_retry_budget: int = Field(default=8, ge=1, description="attempts before `failed`")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For is "
        "believed; empty = none",
    )
    login_max_attempts: int = Field(default=5, ge=1, description="failed logins per email+IP")
    login_max_attempts_per_ip: int = Field(
        default=30, ge=1, description="failed logins per IP, whatever the email"
    )
    login_decay_seconds: int = Field(default=60, ge=1)
    login_hash_slots: int = Field(
        default_factory=lambda: os.cpu_count() or 2,
        ge=1,
        description="password hashes at once per process (each ~19 MiB and a core)",
    )
    login_lockout_delay_seconds: float = Field(
        default=1.0, ge=0, description="a locked-out login waits this long for its 429"
    )
    login_hash_wait_seconds: float = Field(
        default=1.0, ge=0, description="how long a login waits for a hashing slot before 429"
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        """`10.0.0.1,10.0.0.0/8` from the environment; each must be an address or a network."""
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list):
            for item in value:
                ipaddress.ip_network(str(item), strict=False)  # ValueError → a clear error
        return value

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @field_validator("app_key")
    @classmethod
    def _strong_key(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -base64 48`)")
        return value

    @property
    def recordings_root(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"

    @property
    def sqlite_file(self) -> Path:
        """The embedded database, used when DATABASE_URL is unset."""
        return (self.data_dir / "callhistory.sqlite3").resolve()

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url
        if not url:
            return f"sqlite:///{self.sqlite_file}"
        # Accept the plain libpq form and use psycopg 3 as the driver.
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @cached_property
    def signing_key(self) -> bytes:
        """The app key: from APP_KEY, else from DATA_DIR/app.key, created on first use."""
        if self.app_key:
            return self.app_key.encode()
        path = self.data_dir / "app.key"
        if not path.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process won the race; use its key
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()
