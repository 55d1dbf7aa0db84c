"""Which model: resolve the public name and check the caller may use it (404 unknown, 403 not allowed)."""

from __future__ import annotations

from lockgate.errors import InvalidRequest, ModelNotFound, PermissionDenied
from lockgate.gateway.pipeline import Call, Handler, Reply
from lockgate.routing.table import RoutingTable
from lockgate.wire import ChatCompletionRequest


class Authorize:
    def __init__(self, table: RoutingTable) -> None:
        self._table = table

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        route = self._table.get(call.model)
        if route is None:
            raise ModelNotFound(f"The model '{call.model}' does not exist.", param="model")
        if isinstance(call.request, ChatCompletionRequest) and not call.request.messages:
            raise InvalidRequest(
                "'messages' must contain at least one message.", param="messages", code="invalid_value"
            )
        principal = call.principal
        # A route's release was authorised by the route name; its model is the release's choice.
        if call.release is None and principal is not None and not principal.may_use(call.model):
            raise PermissionDenied(f"This API key may not use the model '{call.model}'.", param="model")
        call.route = route
        return await call_next(call)
