"""Errors a client can see, rendered in the OpenAI wire format.

Every failure that reaches a client is one of these. The message is written for the client and never
carries a provider key, an API key or a stack trace.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """An error with an HTTP status and an OpenAI-style body."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}
        """Sent with the error (``Retry-After``, ``x-ratelimit-*``)."""

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        if request_id is not None:
            error["request_id"] = request_id
        return {"error": error}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthenticated(GatewayError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    default_code = "model_not_allowed"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    default_code = "model_not_found"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class RequestsLimited(GatewayError):
    """A requests-per-minute or concurrency limit is reached; ``Retry-After`` says when to try again."""

    status = 429
    type = "requests"
    default_code = "rate_limit_exceeded"


class TokensLimited(GatewayError):
    """A tokens-per-minute limit is reached; ``Retry-After`` says when to try again."""

    status = 429
    type = "tokens"
    default_code = "rate_limit_exceeded"


class BudgetExceeded(GatewayError):
    """A budget's hard cap is reached for its period; ``Retry-After`` is the period's end."""

    status = 429
    type = "insufficient_quota"
    default_code = "budget_exceeded"


class LimitsUnavailable(GatewayError):
    """The limits backend cannot be reached and limits fail closed."""

    status = 503
    type = "api_error"
    default_code = "limits_unavailable"


class UpstreamBadGateway(GatewayError):
    """Every deployment failed (connection errors, 5xx, 429 or a malformed answer)."""

    status = 502
    type = "api_error"
    default_code = "upstream_error"


class NoHealthyDeployment(GatewayError):
    """Every deployment that could serve the model has its circuit open."""

    status = 503
    type = "api_error"
    default_code = "no_healthy_deployment"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"


class InternalError(GatewayError):
    status = 500
    type = "api_error"
    default_code = "internal_error"
