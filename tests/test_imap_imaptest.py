"""imaptest's scripted tests (../shared/peer-suites/imaptest) against one `kinmail serve`, one case per script.

Each script runs as its own user (so scripts cannot disturb each other) through `tests.imaptest_runner`.
A script whose required capabilities we advertise must pass. Scripts we leave out are listed in
`imaptest/excluded.md` beside the runner, each with its reason; for those the test checks that the reason
still holds (the capability is really not advertised), so the list cannot go stale.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imaptest import Conn, ScriptRun, load_script
from tests.serverctl import HOST, KinmailServer

SUITE = Path(__file__).resolve().parents[2] / "shared" / "peer-suites" / "imaptest" / "tests"
EXCLUDED_FILE = Path(__file__).parent / "imaptest" / "excluded.md"
PASSWORD = "imaptest-secret-9"


def script_names() -> list[str]:
    return sorted(
        p.name
        for p in SUITE.iterdir()
        if p.is_file() and not p.name.endswith(".mbox") and p.name != "default.mbox"
    )


def excluded() -> dict[str, str]:
    """`- name: reason` lines of imaptest_excluded.md."""
    out = {}
    for line in EXCLUDED_FILE.read_text().splitlines():
        m = re.match(r"- `([^`]+)`: (.+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


SCRIPTS = script_names()
USERS = {f"it{i}@example.test": PASSWORD for i in range(len(SCRIPTS))} | {
    f"it{i}b@example.test": PASSWORD for i in range(len(SCRIPTS))
}


@pytest.fixture(scope="module")
def imap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    root = tmp_path_factory.mktemp("imaptest")
    with KinmailServer(root / "kinmail", users=USERS, aliases="", services=("imap",)) as srv:
        yield srv


@pytest.fixture(scope="module")
def advertised(imap_server: KinmailServer) -> set[str]:
    conn = Conn(HOST, imap_server.port("imap"), 0)
    try:
        conn.command(f'LOGIN "it0@example.test" "{PASSWORD}"')
        conn.command("CAPABILITY")
        return set(conn.capabilities)
    finally:
        conn.close()


@pytest.mark.parametrize("name", SCRIPTS)
def test_imaptest_script(name: str, imap_server: KinmailServer, advertised: set[str]) -> None:
    script = load_script(SUITE / name)
    missing = [c for c in script.capabilities if c.upper() not in advertised]
    reasons = excluded()
    if name in reasons:
        assert missing, f"{name} is listed as left out ({reasons[name]}) but its capabilities are advertised"
        return
    assert not missing, f"{name} needs {missing}: advertise them or list the script in {EXCLUDED_FILE.name}"
    index = SCRIPTS.index(name)
    users = [(f"it{index}@example.test", PASSWORD), (f"it{index}b@example.test", PASSWORD)]
    run = ScriptRun(script, HOST, imap_server.port("imap"), users)
    assert run.run(), f"{name} was skipped by the runner"


def test_excluded_list_names_real_scripts() -> None:
    assert set(excluded()) <= set(SCRIPTS)
