"""lockgate: one standard path from LLM experiment to production."""

__version__ = "0.1.0"

__all__ = ["__version__"]
