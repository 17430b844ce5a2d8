"""The OpenAPI description: response shapes, the real `filter[...]` parameters, error bodies.

Routes parse their own input (PHP-style brackets, Laravel messages), so FastAPI cannot infer the
parameters; they are declared here, once, from the same constants the parser uses.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from callhistory.ingest.http import MAX_BATCH
from callhistory.models import ABILITIES, DISPOSITIONS
from callhistory.query import ALLOWED_SORTS, DEFAULT_PER_PAGE, MAX_PER_PAGE

DESCRIPTION = """
The call history of a cloud PBX, as the Laravel service it replaces documented it.

Every endpoint needs `Authorization: Bearer <token>` (get one from `POST /api/v1/auth/login`).
Errors are JSON `{"message": ...}`; validation errors add `errors` keyed by field.
"""


class EnumValue(BaseModel):
    number: int
    name: str


class Integration(BaseModel):
    id: int
    call_history_id: int
    integration_type: str = Field(examples=["amocrm"])
    status: Literal["pending", "synced", "failed"]
    error_message: str | None
    created_at: str = Field(examples=["2026-01-13T12:55:02.000000Z"])
    updated_at: str


class CallIndex(BaseModel):
    id: int
    call_id: str = Field(examples=["9b03293e-a0ea-4212-92d1-5848a41d4987"])
    date_time: str = Field(
        examples=["2026-01-13 17:54:36"], description="call start, in the account's timezone"
    )
    src: str
    dst: str
    external_number: str | None
    duration: int = Field(description="seconds, start to end")
    conversation: int = Field(description="seconds, answer to end")
    type: EnumValue = Field(description="1 Incoming, 2 Outgoing, 3 Internal")
    status: EnumValue = Field(description="1 Answered, 2 Not answered")
    recorded_file_url: str | None = Field(description="signed URL of the recording")
    integration: list[Integration]


class LegStep(BaseModel):
    src: str
    dst: str
    channel: str
    dstchannel: str | None
    app: str = Field(description="the dialplan application of the leg (Dial, Queue...)")
    started_at: str
    answered_at: str | None
    ended_at: str
    ring: int = Field(description="seconds before the answer (all of the leg when unanswered)")
    talk: int = Field(description="billsec")
    disposition: str


class CallShow(CallIndex):
    disposition: Literal[DISPOSITIONS]  # type: ignore[valid-type]
    answered_at: str | None
    ended_at: str | None
    pbx_call_id: str | None
    legs: int = Field(description="how many CDR legs were merged into this call")
    caller_name: str | None = Field(description='the name in the caller id (`"Ali" <998...>`)')
    wait: int | None = Field(description="seconds from the start to the answer; null if missed")
    route: list[LegStep] = Field(
        description="the call's CDR legs, the caller's first (empty for calls ingested as JSON)"
    )


class IntegrationEnvelope(BaseModel):
    data: Integration


class CallShowEnvelope(BaseModel):
    data: CallShow


class PageLinks(BaseModel):
    first: str
    last: str
    prev: str | None
    next: str | None


class WindowLink(BaseModel):
    url: str | None
    label: str
    active: bool


class PageMeta(BaseModel):
    current_page: int
    from_: int | None = Field(alias="from")
    last_page: int
    links: list[WindowLink]
    path: str
    per_page: int
    to: int | None
    total: int


class CallPage(BaseModel):
    data: list[CallIndex]
    links: PageLinks
    meta: PageMeta


class IngestMeta(BaseModel):
    created: int
    existing: int


class IngestResult(BaseModel):
    data: list[CallIndex]
    meta: IngestMeta


class IngestCall(BaseModel):
    model_config = ConfigDict(title="IngestCall")

    call_id: str | None = Field(None, description="UUID; derived from pbx_call_id when absent")
    pbx_call_id: str | None = Field(None, max_length=255)
    date_time: str = Field(
        examples=["2026-01-13 17:54:36"],
        pattern=r"^(19[7-9][0-9]|20[0-9][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8]) "
        r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$",
        description="Y-m-d H:i:s in the account's timezone, 1970-01-01 to 2099-12-31",
    )
    src: str = Field(min_length=1, max_length=255)
    dst: str = Field(min_length=1, max_length=255)
    external_number: str | None = Field(None, max_length=255)
    duration: int = Field(ge=0, le=2**31 - 1)
    conversation: int = Field(ge=0, le=2**31 - 1, description="at most duration")
    type: Literal[1, 2, 3] | None = Field(
        None, description="when absent, classified from src/dst with the account's PBX layout"
    )
    status: Literal[1, 2] | None = Field(None, description="required without disposition")
    disposition: Literal[DISPOSITIONS] | None = None  # type: ignore[valid-type]
    recording: str | None = Field(None, examples=["2026/01/13/1768308876.2.wav"])


class Message(BaseModel):
    message: str


class LaravelValidationError(BaseModel):
    """Laravel's 422 body (named apart from FastAPI's own `ValidationError`, which it replaces)."""

    message: str = Field(examples=["The per page field must be between 1 and 300."])
    errors: dict[str, list[str]]


class LoginToken(BaseModel):
    access_token: str = Field(examples=["1|i5poMifK2y0Sd1Wf8TVKeLVRjJKR8RyPb92YUbKH61170f51"])


class LoginResult(BaseModel):
    status: Literal["success"]
    code: Literal[200]
    result: LoginToken
    message: str


class Me(BaseModel):
    id: int
    name: str
    email: str
    type: EnumValue
    created_at: str


class MeResult(BaseModel):
    status: Literal["success"]
    code: Literal[200]
    result: Me
    message: str


class User(BaseModel):
    id: int
    name: str
    email: str
    type: EnumValue = Field(description="1 ADMIN (the whole account), 2 USER (its extensions)")
    extensions: list[str] = Field(
        description="a USER sees the calls where one of these is the caller or the answering party"
    )
    disabled_at: str | None = Field(description="set: no login, and every token refused")
    created_at: str


class UserList(BaseModel):
    data: list[User]


class UserEnvelope(BaseModel):
    data: User


class Token(BaseModel):
    id: int
    user_id: int
    name: str
    abilities: list[str]
    last_used_at: str | None = Field(description="updated at most once a minute")
    created_at: str


class NewToken(Token):
    plain_text_token: str = Field(
        description="the bearer token; shown this once, only its hash is kept",
        examples=["7|i5poMifK2y0Sd1Wf8TVKeLVRjJKR8RyPb92YUbKH61170f51"],
    )


class TokenList(BaseModel):
    data: list[Token]


class NewTokenEnvelope(BaseModel):
    data: NewToken


class EmptyResult(BaseModel):
    status: Literal["success"]
    code: Literal[200]
    result: None
    message: str


_ERROR_DESCRIPTIONS = {
    400: ("Unknown filter or sort", Message),
    401: ("Missing or invalid token: `Unauthenticated.`", Message),
    403: ("The token or the role lacks the right: `This action is unauthorized.`", Message),
    404: ("Not found", Message),
    422: ("Validation failed (Laravel's message and errors)", LaravelValidationError),
    429: ("Too many failed logins: `Too Many Attempts.`", Message),
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "description": _ERROR_DESCRIPTIONS[status][0],
            "model": _ERROR_DESCRIPTIONS[status][1],
        }
        for status in statuses
    }


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_LIST_NOTE = " A comma-separated value is a list (any item matches)."
LIST_PARAMETERS = [
    # Laravel's paginator never refuses a page: anything that is not an integer >= 1 means 1.
    _param(
        "page",
        {"type": "string", "default": "1", "examples": ["2"]},
        "Page number; anything that is not an integer of at least 1 means page 1.",
    ),
    _param(
        "per_page",
        {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": DEFAULT_PER_PAGE},
        "Rows per page.",
    ),
    _param(
        "sort",
        {"type": "string", "default": "id", "example": "-datetime"},
        f"Comma-separated keys of `{', '.join(ALLOWED_SORTS)}` (`date_time` is an alias of "
        "`datetime`); `-` means descending. Ties are broken by `id`.",
    ),
    *(
        _param(
            f"filter[{name}]",
            {"type": "string"},
            f"{label}: case-insensitive substring; `%` and `_` are literal." + _LIST_NOTE,
        )
        for name, label in (
            ("src", "Calling number"),
            ("dst", "Called number"),
            ("external_number", "The company's external (DID/trunk) number"),
        )
    ),
    *(
        _param(
            f"filter[{name}]",
            # Permissive on purpose: the server trims items and skips empty ones (then 422s
            # what is still wrong); the pattern admits every value it may accept.
            {"type": "string", "pattern": r"^[\s,<>=+\-0-9]*$", "examples": [">=60"]},
            f"{label} in seconds: exact, or with a prefix `>`, `>=`, `<`, `<=`." + _LIST_NOTE,
        )
        for name, label in (("duration", "Total length"), ("conversation", "Talk time"))
    ),
    _param(
        "filter[type]",
        {"type": "string", "pattern": r"^[\s,+123]*$", "examples": ["2", "1,2"]},
        "1 Incoming, 2 Outgoing, 3 Internal." + _LIST_NOTE,
    ),
    _param(
        "filter[status]",
        {"type": "string", "pattern": r"^[\s,+12]*$", "examples": ["1"]},
        "1 Answered, 2 Not answered." + _LIST_NOTE,
    ),
    _param(
        "filter[integration_status]",
        {"type": "string", "pattern": r"^[\s,a-z]*$", "examples": ["failed", "pending,failed"]},
        "Beyond the original contract: calls with a CRM sync row in this state, e.g. `failed`."
        + _LIST_NOTE,
    ),
    _param(
        "filter[from]",
        {"type": "string", "example": "2026-01-13 00:00:00"},
        "Start of the period, inclusive: `Y-m-d H:i:s` or `Y-m-d`, in the account's timezone.",
    ),
    _param(
        "filter[to]",
        {"type": "string", "example": "2026-01-13 23:59:59"},
        "End of the period, inclusive: `Y-m-d H:i:s` or `Y-m-d` (then 23:59:59).",
    ),
]


STATS_PARAMETERS = [
    {**_param(
        "from",
        {"type": "string", "example": "2026-01-01"},
        "Start of the period, inclusive: `Y-m-d H:i:s` or `Y-m-d`, in the account's timezone.",
    ), "required": True},
    {**_param(
        "to",
        {"type": "string", "example": "2026-01-31"},
        "End of the period, inclusive: `Y-m-d H:i:s` or `Y-m-d` (then 23:59:59).",
    ), "required": True},
    _param(
        "external_number",
        {"type": "string", "example": "781130590"},
        "Only calls on this external (DID/trunk) number, exact." + _LIST_NOTE,
    ),
]  # fmt: skip


MISSED_PARAMETERS = [
    _param(
        "within",
        {"type": "integer", "minimum": 1, "maximum": 720, "default": 24},
        "Hours after a caller's last missed call in which a callback (an outgoing call to the "
        "number) or an answered call from them counts as reaching them.",
    ),
    LIST_PARAMETERS[0],  # page
    LIST_PARAMETERS[1],  # per_page
]
SLA_PARAMETER = _param(
    "sla",
    {"type": "integer", "minimum": 0, "maximum": 3600, "default": 20},
    "Seconds within which an incoming call must be answered to count for the service level.",
)
STATUS_PARAMETER = _param(
    "status", {"type": "string", "enum": ["1", "2"]}, "1 Answered, 2 Not answered."
)


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


INGEST_BODY = _json_body(
    {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_BATCH,
        "items": {"$ref": "#/components/schemas/IngestCall"},
    }
)
LOGIN_BODY = _json_body(
    {
        "type": "object",
        "required": ["email", "password"],
        "properties": {
            "email": {"type": "string", "format": "email"},
            "password": {"type": "string", "minLength": 1},
        },
    }
)
CHANGE_PASSWORD_BODY = _json_body(
    {
        "type": "object",
        "required": ["old_password", "password", "password_confirmation"],
        "properties": {
            "old_password": {"type": "string"},
            "password": {"type": "string", "minLength": 6},
            "password_confirmation": {"type": "string"},
        },
    }
)

_ROLE = {"type": "integer", "enum": [1, 2], "description": "1 ADMIN (default), 2 USER"}
_EXTENSIONS = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[0-9A-Za-z*#+_.-]{1,64}$"},
    "description": "required (one or more) for a USER; none for an ADMIN",
}
USER_BODY = _json_body(
    {
        "type": "object",
        "required": ["name", "email", "password"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "email": {"type": "string", "format": "email"},
            "password": {"type": "string", "minLength": 6},
            "type": _ROLE,
            "extensions": _EXTENSIONS,
        },
    }
)
USER_PATCH_BODY = _json_body(
    {
        "type": "object",
        "properties": {"type": _ROLE, "extensions": _EXTENSIONS, "disabled": {"type": "boolean"}},
    }
)
TOKEN_BODY = _json_body(
    {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 255},
            "abilities": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "enum": ["*", *ABILITIES]},
                "description": "default `*`; never more than the token that creates it",
            },
        },
    }
)


_FASTAPI_422 = "#/components/schemas/HTTPValidationError"


def _drop_fastapi_validation_errors(schema: dict[str, Any]) -> None:
    """FastAPI documents its own `{detail: [{loc, msg, type}]}` 422 for every operation with
    parameters; this service never sends it (routes parse their own input, and the one fallback
    answers Laravel's body). Operations that can answer 422 declare it themselves."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            response = operation.get("responses", {}).get("422", {})
            content = response.get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref") == _FASTAPI_422:
                del operation["responses"]["422"]
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def install(app: FastAPI) -> None:
    """Add the bearer scheme and the body schemas that routes reference by name."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        _drop_fastapi_validation_errors(schema)
        components.setdefault("schemas", {})["IngestCall"] = IngestCall.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "Sanctum token `id|secret`",
            }
        }
        schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
