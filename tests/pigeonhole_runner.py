"""Runs the Pigeonhole Sieve test suite (`.svtest` files) against kinmail's Sieve implementation through the
`vnd.dovecot.testsuite` extension (`kinmail.sieve.testsuite`), which only tests enable.

The suite lives in `../shared/peer-suites/pigeonhole` (LGPL-2.1, see its COPYING); it is read in place, never
copied. `LEFT_OUT` lists the files not run, each with the reason; `pigeonhole_left_out.md` beside this file
says the same for people.
"""

from __future__ import annotations

import os
from pathlib import Path

from kinmail.sieve.testsuite import Suite

SUITE = Path(
    os.environ.get(
        "KINMAIL_PIGEONHOLE_SUITE",
        str(Path(__file__).resolve().parents[2] / "shared" / "peer-suites" / "pigeonhole"),
    )
)
TESTS = SUITE / "tests"

_EXTPROGRAMS = (
    "the vnd.dovecot.pipe/filter/execute extensions run external programs from Dovecot's configured "
    "program directories; kinmail does not offer them"
)

# relative path -> why it is not run
LEFT_OUT: dict[str, str] = {
    "plugins/extprograms/errors.svtest": _EXTPROGRAMS,
    "plugins/extprograms/execute/command.svtest": _EXTPROGRAMS,
    "plugins/extprograms/execute/errors.svtest": _EXTPROGRAMS,
    "plugins/extprograms/execute/execute.svtest": _EXTPROGRAMS,
    "plugins/extprograms/filter/command.svtest": _EXTPROGRAMS,
    "plugins/extprograms/filter/errors.svtest": _EXTPROGRAMS,
    "plugins/extprograms/filter/execute.svtest": _EXTPROGRAMS,
    "plugins/extprograms/pipe/command.svtest": _EXTPROGRAMS,
    "plugins/extprograms/pipe/errors.svtest": _EXTPROGRAMS,
    "plugins/extprograms/pipe/execute.svtest": _EXTPROGRAMS,
    "execute/examples.svtest": (
        "compiles scripts from ../../examples/, a folder of the Pigeonhole source tree that is not part of the "
        "suite copy"
    ),
    "execute/errors-cpu-limit.svtest": (
        "tests Dovecot's sieve_max_cpu_time setting (a CPU-time budget per script run); kinmail has no such "
        "setting: its interpreter has no loops, so a script's run time is bounded by its size"
    ),
    "extensions/environment/basic.svtest": (
        'expects the "name" environment item to be exactly "Pigeonhole Sieve" and "location" to be "MS"; '
        'kinmail answers "kinmail" and "MDA" (RFC 5183 §4.2: the item names the implementation)'
    ),
}

# Files under failures/ are regression tests for crashes of the Pigeonhole test tool (their comments say
# "Used to cause the test suite to segfault"): their assertions are not meant to hold. For them the runner
# asserts that the file runs to the end without an exception escaping the interpreter.
CRASH_TESTS = "failures/"


def all_files() -> list[str]:
    return sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("*.svtest"))


def files_to_run() -> list[str]:
    return [f for f in all_files() if f not in LEFT_OUT]


def run(relative: str) -> list[str]:
    """Run one file; returns its failures (an empty list when every test in it passed)."""
    return Suite(TESTS / relative).run()
