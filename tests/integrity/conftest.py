"""Fixtures shared by the store-integrity tests."""

from extract_support import tiny_backbones  # noqa: F401  (a fixture, used by name)
