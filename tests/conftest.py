"""Shared fixtures: `server` is a running `kinmail serve` on free loopback ports (see serverctl.py); `store` is a
`Store` over empty folders in `tmp_path` (`mail/`, `index/`), closed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kinmail.store import Store
from tests.serverctl import KinmailServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[KinmailServer]:
    with KinmailServer(tmp_path / "kinmail") as srv:
        yield srv


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "mail", tmp_path / "index")
    yield s
    s.close()
