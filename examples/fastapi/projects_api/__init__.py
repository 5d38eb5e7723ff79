"""A FastAPI application that emails a project's owner when someone creates the project."""
