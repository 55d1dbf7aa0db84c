"""Routing: which deployment serves a request, in what order, and which ones are resting."""
