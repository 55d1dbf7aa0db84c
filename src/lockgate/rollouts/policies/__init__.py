"""The shipped Rego policy that decides a rollout analysis, and its tests."""
