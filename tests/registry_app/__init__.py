"""A small application for the registry tests: models and callables that test registries name."""
