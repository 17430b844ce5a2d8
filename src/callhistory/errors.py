"""Errors as the contract's JSON bodies (Laravel's shapes)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with the status and JSON body the client gets."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def validation_message(errors: dict[str, list[str]]) -> str:
    """Laravel's summary: the first message, then "(and N more error(s))"."""
    messages = [m for field_messages in errors.values() for m in field_messages]
    more = len(messages) - 1
    if more <= 0:
        return messages[0]
    return f"{messages[0]} (and {more} more error{'' if more == 1 else 's'})"


class ValidationErrors:
    """Collects messages per attribute, in the order the rules run."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ApiError(422, validation_message(self.errors), self.errors)


UNAUTHENTICATED = "Unauthenticated."
UNAUTHORIZED = "This action is unauthorized."
CALL_NOT_FOUND = "Call not found."
