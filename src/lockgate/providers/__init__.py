"""Providers: one class per upstream API behind the small contract in ``base``."""
