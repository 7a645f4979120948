"""Fixtures for the cloud-port adapters: anyio on asyncio, a fake-time Hostwinds client."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
