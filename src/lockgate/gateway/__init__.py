"""The data plane: an OpenAI-compatible HTTP gateway in front of many providers."""
