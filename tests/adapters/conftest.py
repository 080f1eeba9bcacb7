"""Fixtures of the device-layer tests (builders live in :mod:`tests.adapters.helpers`)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.adapters.helpers import T0


@pytest.fixture
def t0() -> dt.datetime:
    """The simulated start time of the test sites (Monday 2025-01-06 12:00 in Tokyo)."""
    return T0
