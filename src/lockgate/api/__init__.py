"""The control REST API: FastAPI routers per resource over the control-plane services."""
