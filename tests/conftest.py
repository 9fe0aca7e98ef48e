"""Shared fixtures: `server` is a running `kinmail serve` on free loopback ports (see serverctl.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverctl import KinmailServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[KinmailServer]:
    with KinmailServer(tmp_path / "kinmail") as srv:
        yield srv
