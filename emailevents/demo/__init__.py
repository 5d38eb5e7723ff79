"""The demo application behind ``emailevents demo``: models, seed data and hooks for events.yaml."""

from pathlib import Path

__all__ = ["DEMO_TEMPLATES"]

DEMO_TEMPLATES = Path(__file__).resolve().parent / "templates"
"""The demo application's Postmark templates, one YAML file per event."""
