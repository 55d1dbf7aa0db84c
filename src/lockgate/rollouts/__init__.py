"""Progressive delivery of releases: rollout strategies, live analysis and the controller that drives them."""
