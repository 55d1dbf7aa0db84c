"""The control API application. Routes live in ``routers/``; this module only wires them."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lockgate import __version__
from lockgate.api.routers import audit, models, prompts, releases, tenants, users
from lockgate.control.errors import ControlError
from lockgate.control.plane import ControlPlane
from lockgate.errors import GatewayError, MethodNotAllowed, NotFound


def create_control_api(control: ControlPlane) -> FastAPI:
    api = FastAPI(
        title="lockgate control API",
        version=__version__,
        description="Model registry, prompt catalog, releases, environments, users and the audit log. "
        "Authenticate with a control token: `Authorization: Bearer lgc-...`.",
    )
    api.state.control = control
    for module in (tenants, users, models, prompts, releases, audit):
        api.include_router(module.router, prefix="/api/v1")

    @api.exception_handler(ControlError)
    async def control_error(_: Request, exc: ControlError) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": exc.message, "type": type(exc).__name__}}, status_code=exc.status
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
            return JSONResponse(
                {"error": {"message": str(exc.detail), "type": "http_error"}}, exc.status_code
            )
        return JSONResponse(error.body(), status_code=error.status)

    return api
