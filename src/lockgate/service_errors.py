"""Errors of the service layer. The REST API answers with ``status`` and the message; the CLI prints it."""

from __future__ import annotations

from typing import ClassVar


class ControlError(Exception):
    status: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(ControlError):
    """The request is well-formed but breaks a rule (semver under-declared, retired model, ...)."""

    status = 422


class Unauthorized(ControlError):
    status = 401


class Forbidden(ControlError):
    status = 403


class NotFound(ControlError):
    status = 404


class Conflict(ControlError):
    status = 409
