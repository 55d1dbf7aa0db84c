"""Configuration: one YAML file, validated with errors that name the file, the line and the field."""
