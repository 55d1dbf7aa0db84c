"""Control plane: model registry, prompt catalog, releases and environments."""
