"""Running the app under uvicorn: which proxies are trusted, and an access log without secrets."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from fastapi import FastAPI

from callhistory.config import Settings

#: Query parameters whose values are secrets: a signed recording link works for anyone holding it.
_SECRET_PARAMS = re.compile(r"(?i)([?&](?:signature|token|access_token|code)=)[^&\s\"]*")


def redact(text: str) -> str:
    return _SECRET_PARAMS.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    """Blanks signatures and tokens in uvicorn's access log lines (the path is its 3rd arg)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """X-Forwarded-For/-Proto are believed only from TRUSTED_PROXIES (none by default: uvicorn
    itself would trust 127.0.0.1, and then anyone on the host could pick their own address)."""
    trusted = settings.trusted_proxies
    return {
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or [],
        "server_header": False,
    }


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with secrets blanked in the access log of every worker process."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "callhistory.api.server.RedactSecrets"}}
    config["handlers"]["access"]["filters"] = ["redact"]
    return config


def run(app: FastAPI | None, settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """Serve `app` in this process, or `workers` processes that each build their own app from
    the environment (shared nothing but the database: the login throttle lives there too)."""
    import uvicorn

    options = {
        "host": host, "port": port, "log_level": "info", "log_config": log_config(),
        **uvicorn_options(settings),
    }  # fmt: skip
    if workers > 1 or app is None:
        uvicorn.run("callhistory.api:create_app", factory=True, workers=workers, **options)
    else:
        uvicorn.run(app, **options)
