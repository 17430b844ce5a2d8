"""People of an account over the API (our addition): its users, for an admin, and tokens, for
everyone (their own; an admin: the account's)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import Connection
from starlette.responses import Response

from callhistory import accounts, resources
from callhistory.accounts import Principal
from callhistory.api import docs
from callhistory.api.auth import string_field
from callhistory.api.calls import path_id
from callhistory.api.deps import ConnDep, JsonBodyDep, PrincipalDep, require
from callhistory.api.responses import JSONResponse
from callhistory.errors import ApiError, ValidationErrors
from callhistory.models import ABILITIES, ABILITY_USERS_MANAGE, UserType
from callhistory.store import AnyRow

router = APIRouter(prefix="/api/v1", tags=["People"])
AdminDep = Annotated[Principal, Depends(require(ABILITY_USERS_MANAGE))]
USER_NOT_FOUND = "User not found."
TOKEN_NOT_FOUND = "Token not found."


def _users(conn: Connection, rows: list[AnyRow]) -> list[dict[str, Any]]:
    owned = accounts.extensions_of(conn, [row.id for row in rows])
    return [resources.user(row, owned[row.id]) for row in rows]


def _account_user(conn: Connection, principal: Principal, user: str) -> AnyRow:
    user_id = path_id(user)
    row = accounts.account_user(conn, principal.account_id, user_id) if user_id else None
    if row is None:
        raise ApiError(404, USER_NOT_FOUND)
    return row


def _role(body: dict[str, Any], errors: ValidationErrors, current: UserType | None) -> UserType:
    """`type` (1 ADMIN, 2 USER, as `auth/me` shows them); `current` when absent (else ADMIN)."""
    if "type" not in body:
        return current or UserType.ADMIN
    value = body["type"]
    if isinstance(value, bool) or value not in (1, 2):
        errors.add("type", "The selected type is invalid.")
        return current or UserType.ADMIN
    return UserType(value)


def _extensions(body: dict[str, Any], errors: ValidationErrors) -> list[str] | None:
    if "extensions" not in body:
        return None
    value = body["extensions"]
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        errors.add("extensions", "The extensions field must be a list of strings.")
        return None
    return value


def _role_errors(role: UserType, extensions: list[str], errors: ValidationErrors) -> None:
    try:
        accounts.check_role(role, extensions)
    except accounts.AccountError as exc:
        errors.add("extensions", str(exc))


@router.get(
    "/users",
    summary="The account's users (admin)",
    response_model=docs.UserList,
    responses=docs.errors(401, 403),
)
def list_users(principal: AdminDep, conn: ConnDep) -> JSONResponse:
    return JSONResponse({"data": _users(conn, accounts.list_users(conn, principal.account_id))})


@router.post(
    "/users",
    summary="Add a user to the account (admin)",
    status_code=201,
    response_model=docs.UserEnvelope,
    responses=docs.errors(401, 403, 422),
    openapi_extra={"requestBody": docs.USER_BODY},
)
def create_user(body: JsonBodyDep, principal: AdminDep, conn: ConnDep) -> JSONResponse:
    body = body if isinstance(body, dict) else {}
    errors = ValidationErrors()
    name = string_field(body, "name", errors)
    email = string_field(body, "email", errors)
    if email and (accounts.EMAIL.fullmatch(email) is None or len(email) > 255):
        errors.add("email", "The email field must be a valid email address.")
    elif email and accounts.find_user(conn, email) is not None:
        errors.add("email", "The email has already been taken.")
    password = string_field(body, "password", errors)
    if password and len(password) < 6:
        errors.add("password", "The password field must be at least 6 characters.")
    role = _role(body, errors, None)
    extensions = _extensions(body, errors) or []
    _role_errors(role, extensions, errors)
    errors.raise_if_any()
    user_id = accounts.create_user(
        conn, principal.account_id, email, name[:255], password, role=role, extensions=extensions
    )
    row = accounts.account_user(conn, principal.account_id, user_id)
    assert row is not None
    return JSONResponse({"data": _users(conn, [row])[0]}, status_code=201)


@router.patch(
    "/users/{user}",
    summary="Change a user's role, extensions or status (admin)",
    response_model=docs.UserEnvelope,
    responses=docs.errors(401, 403, 404, 422),
    openapi_extra={"requestBody": docs.USER_PATCH_BODY},
)
def update_user(user: str, body: JsonBodyDep, principal: AdminDep, conn: ConnDep) -> JSONResponse:
    row = _account_user(conn, principal, user)
    errors = ValidationErrors()
    if not isinstance(body, dict):  # every field is optional: only an object can mean "no change"
        errors.add("body", "The body must be a JSON object.")
        errors.raise_if_any()
    role = _role(body, errors, UserType(row.type))
    extensions = _extensions(body, errors)
    disabled = body.get("disabled")
    if "disabled" in body and not isinstance(disabled, bool):
        errors.add("disabled", "The disabled field must be true or false.")
    if row.id == principal.user_id and (role is UserType.USER or disabled is True):
        errors.add("type", "You cannot demote or disable yourself; ask another admin.")
    if "type" in body or extensions is not None:
        if extensions is None:  # a new role alone keeps the extensions a user had
            extensions = (
                [] if role is UserType.ADMIN else accounts.extensions_of(conn, [row.id])[row.id]
            )
        _role_errors(role, extensions, errors)
    errors.raise_if_any()
    if extensions is not None:
        accounts.set_role(conn, row.id, role, extensions)
    if isinstance(disabled, bool):
        accounts.set_disabled(conn, row.email, disabled)
    after = accounts.account_user(conn, principal.account_id, row.id)
    assert after is not None
    return JSONResponse({"data": _users(conn, [after])[0]})


@router.get(
    "/tokens",
    summary="Tokens: your own; an admin's, every token of the account",
    response_model=docs.TokenList,
    responses=docs.errors(401),
)
def list_tokens(principal: PrincipalDep, conn: ConnDep) -> JSONResponse:
    mine = None if principal.can(ABILITY_USERS_MANAGE) else principal.user_id
    rows = accounts.account_tokens(conn, principal.account_id, mine)
    return JSONResponse({"data": [resources.token(row) for row in rows]})


@router.post(
    "/tokens",
    summary="Create a token for yourself (its secret is shown once)",
    status_code=201,
    response_model=docs.NewTokenEnvelope,
    responses=docs.errors(401, 422),
    openapi_extra={"requestBody": docs.TOKEN_BODY},
)
def create_token(body: JsonBodyDep, principal: PrincipalDep, conn: ConnDep) -> JSONResponse:
    body = body if isinstance(body, dict) else {}
    errors = ValidationErrors()
    name = string_field(body, "name", errors)
    if len(name) > 255:
        errors.add("name", "The name field must not be greater than 255 characters.")
    abilities = body.get("abilities", ["*"])
    if (
        not isinstance(abilities, list)
        or not abilities
        or not all(isinstance(a, str) and (a == "*" or a in ABILITIES) for a in abilities)
    ):
        errors.add("abilities", f"The abilities must be a list of: *, {', '.join(ABILITIES)}.")
    elif not all(principal.can(a) for a in abilities if a != "*") or (
        "*" in abilities and "*" not in principal.abilities
    ):
        # No token grants more than the one that made it.
        errors.add("abilities", "A token cannot grant more than the token that creates it.")
    errors.raise_if_any()
    granted = tuple(dict.fromkeys(abilities))
    plaintext = accounts.create_token(conn, principal.user_id, name, granted)
    token_id = int(plaintext.partition("|")[0])
    (row,) = accounts.account_tokens(conn, principal.account_id, token_id=token_id)
    data = {**resources.token(row), "plain_text_token": plaintext}
    return JSONResponse({"data": data}, status_code=201)


@router.delete(
    "/tokens/{token}",
    summary="Revoke a token: your own; an admin, any of the account's",
    status_code=204,
    responses=docs.errors(401, 404),
)
def revoke_token(token: str, principal: PrincipalDep, conn: ConnDep) -> Response:
    token_id = path_id(token)
    mine = None if principal.can(ABILITY_USERS_MANAGE) else principal.user_id
    if token_id is None or not accounts.account_tokens(conn, principal.account_id, mine, token_id):
        raise ApiError(404, TOKEN_NOT_FOUND)
    accounts.revoke_token(conn, token_id)
    return Response(status_code=204)
