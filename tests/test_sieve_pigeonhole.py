"""The Pigeonhole Sieve test suite, one pytest case per `.svtest` file (see tests/pigeonhole_runner.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kinmail.sieve import SieveError, compile_script
from tests import pigeonhole_runner as runner


@pytest.mark.parametrize("relative", runner.files_to_run())
def test_svtest(relative: str) -> None:
    failures = runner.run(relative)
    if relative.startswith(runner.CRASH_TESTS):
        assert isinstance(failures, list)  # ran to the end: nothing escaped the interpreter
        return
    assert failures == []


def test_at_least_90_percent_of_the_suite_runs() -> None:
    files = runner.all_files()
    assert len(files) > 100
    assert all(name in files for name in runner.LEFT_OUT)
    assert len(runner.files_to_run()) >= 0.9 * len(files)


def test_the_left_out_page_names_the_same_files() -> None:
    page = (Path(__file__).parent / "pigeonhole_left_out.md").read_text(encoding="utf-8")
    assert set(re.findall(r"`([\w/.-]+\.svtest)`", page)) == set(runner.LEFT_OUT)


def test_testsuite_extension_is_not_available_to_user_scripts() -> None:
    with pytest.raises(SieveError) as info:
        compile_script('require "vnd.dovecot.testsuite";\ntest "x" { keep; }\n')
    assert "vnd.dovecot.testsuite" in str(info.value)
