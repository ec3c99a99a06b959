"""Fixtures shared by the extract and cache tests."""

from extract_support import tiny_backbones  # noqa: F401  (a fixture, used by name)
