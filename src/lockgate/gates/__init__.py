"""Promotion gates, their Rego policies and the signed evidence of every promotion attempt."""
