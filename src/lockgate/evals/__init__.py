"""Evals: datasets, scorers, the runner, reports, baselines and policy gates."""
