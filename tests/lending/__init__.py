"""A second, unrelated application: a lending library, with models and hooks of its own."""
