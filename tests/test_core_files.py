"""`kinmail.core.atomic`'s file helpers: whole reads with a size hint, complete writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kinmail.core.atomic import read_all, write_all


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 200_000), hint=st.integers(-5, 200_000))
def test_read_all_returns_the_whole_file_whatever_the_hint(tmp_path: Path, size: int, hint: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    assert read_all(str(path), hint) == data


def test_read_all_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_all(str(tmp_path / "gone"), 10)
