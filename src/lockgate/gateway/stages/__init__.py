"""Pipeline stages, one concern each."""
