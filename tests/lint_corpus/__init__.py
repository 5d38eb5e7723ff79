"""Broken registries and templates, one mistake each, for tests/test_lint.py and docs/lint.md."""
