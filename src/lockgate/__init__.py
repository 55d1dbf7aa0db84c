"""lockgate: one standard path from LLM experiment to production."""

__version__ = "0.2.0"

__all__ = ["__version__"]
