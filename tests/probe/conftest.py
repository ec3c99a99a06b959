"""Probe fixtures: short head grids (tuning still runs, over two candidates) without touching the registry for
longer than one test."""

from __future__ import annotations

import dataclasses

import pytest

from medtransfer.probe.heads import HEADS


@pytest.fixture()
def short_grids(monkeypatch):
    """Every registered head with its first two grid candidates, restored after the test."""
    for name, spec in list(HEADS.items()):
        monkeypatch.setitem(HEADS, name, dataclasses.replace(spec, grid=spec.grid[:2]))
    return HEADS
