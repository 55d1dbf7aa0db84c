"""Limits and budgets: admission of a call against its tenant's, team's, key's and model's counters."""
