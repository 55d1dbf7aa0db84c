"""The control API application. Routes live in ``routers/``; this module only wires them."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from lockgate import __version__
from lockgate.api.auth import ControlAuth
from lockgate.api.deps import authorized
from lockgate.api.routers import (
    audit,
    datasets,
    evals,
    evidence,
    gates,
    limits,
    models,
    prompts,
    releases,
    rollouts,
    tenants,
    users,
)
from lockgate.errors import GatewayError, MethodNotAllowed, NotFound
from lockgate.service_errors import ControlError
from lockgate.services import Services

log = logging.getLogger(__name__)

ROUTERS = (
    users,
    tenants,
    models,
    prompts,
    releases,
    datasets,
    evals,
    gates,
    rollouts,
    limits,
    evidence,
    audit,
)


def create_control_api(services: Services, max_body_bytes: int = 16 * 1024 * 1024) -> ASGIApp:
    """The FastAPI app behind ``ControlAuth``: no route runs without a valid control token."""
    api = FastAPI(
        title="lockgate control API",
        version=__version__,
        description="Model registry, prompt catalog, releases and environments, datasets, server-side eval "
        "runs, gates, evidence, limits and budgets, users, tokens and the audit log. Authenticate with a "
        "control token: `Authorization: Bearer lgc-...`. Permissions per operation: docs/rbac.md.",
    )
    api.state.services = services
    for module in ROUTERS:
        api.include_router(module.router, prefix="/api/v1", dependencies=[Depends(authorized)])

    @api.exception_handler(ControlError)
    async def control_error(_: Request, exc: ControlError) -> JSONResponse:
        return _error(exc.status, exc.message, type(exc).__name__)

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return _error(422, f"{where}: {message}", "Invalid", param=where)

    @api.exception_handler(DataError)
    async def unstorable(_: Request, exc: DataError) -> JSONResponse:
        # A value the store cannot hold (a NUL character, a number out of its column's range, on
        # PostgreSQL) is the request's fault, not the server's.
        log.info("control API request refused by the store: %s", exc.orig)
        return _error(
            422,
            "a value in this request cannot be stored (a NUL character, or a number out of range)",
            "Invalid",
        )

    @api.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        # Unknown paths anywhere on the server answer in the OpenAI error format the gateway uses.
        error: GatewayError
        if exc.status_code == 405:
            error = MethodNotAllowed("Method not allowed for this path.")
        elif exc.status_code == 404:
            error = NotFound(
                "Unknown path. See /v1/chat/completions, /v1/models, or /docs for the control API."
            )
        else:
            return _error(exc.status_code, str(exc.detail), "http_error")
        return JSONResponse(error.body(), status_code=error.status)

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("control API %s %s failed", request.method, request.url.path)
        return _error(500, "the server failed to handle this request; see its log", "InternalError")

    return ControlAuth(api, services.tokens, max_body_bytes)


def _error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    error: dict[str, str | None] = {"message": message, "type": kind}
    if param is not None:
        error["param"] = param
    return JSONResponse({"error": error}, status_code=status)
