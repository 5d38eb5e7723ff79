"""A module that fails at import, as application code sometimes does."""

raise RuntimeError("registry_app.broken fails at import on purpose")
