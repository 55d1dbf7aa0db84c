"""Ops plane: the request log, metrics and (later) traces, SLOs and cost analytics."""
