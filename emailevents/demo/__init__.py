"""The demo application behind ``emailevents demo``: models, seed data and hooks for events.yaml."""
