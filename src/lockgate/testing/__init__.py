"""Real seams for testing and benchmarking lockgate (and applications in front of it)."""
