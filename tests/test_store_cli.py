"""`kinmail index rebuild` and `kinmail index check` through the command line, as an admin runs them."""

from __future__ import annotations

from pathlib import Path

from kinmail.store import Store
from tests.serverctl import KinmailServer


def test_index_rebuild_and_check(tmp_path: Path) -> None:
    server = KinmailServer(tmp_path / "kinmail")  # config only: the commands work on the data folder
    data = server.data_dir
    store = Store(data / "mail", data / "index")
    mb = store.mailboxes("alice@example.test")
    for n in range(3):
        mb.deliver("INBOX", f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(), flags=["\\Seen"] if n else [])
    mb.open("INBOX").store_flags([1], ["\\Flagged"], "add")
    before = [(i.uid, i.flags) for i in mb.open("INBOX").messages()]
    validity = mb.open("INBOX").uidvalidity
    store.close()

    ok = server.kinmail("index", "check")
    assert ok.returncode == 0, ok.stderr
    assert "alice@example.test: ok" in ok.stdout

    # another program drops a file in: check reports it and exits 1, without changing anything
    (server.maildir("alice@example.test") / "new" / "1700000000.M1P1Q1.other").write_bytes(
        b"Subject: x\n\ny\n"
    )
    bad = server.kinmail("index", "check", "alice@example.test")
    assert bad.returncode == 1
    assert "INBOX: 1 files not indexed" in bad.stdout
    assert "disagree" in bad.stderr and "Traceback" not in bad.stderr

    index = data / "index" / "example.test" / "alice.sqlite"
    index.write_bytes(b"garbage" * 1000)
    done = server.kinmail("index", "rebuild", "alice@example.test")
    assert done.returncode == 0, done.stderr
    assert "alice@example.test: 4 messages indexed" in done.stdout
    assert server.kinmail("index", "check").returncode == 0

    again = Store(data / "mail", data / "index")
    box = again.mailboxes("alice@example.test").open("INBOX")
    assert box.uidvalidity == validity
    assert [(i.uid, i.flags) for i in box.messages()] == [*before, (4, frozenset())]
    again.close()

    assert server.kinmail("index", "rebuild", "--all").returncode == 0
    usage = server.kinmail("index", "rebuild")
    assert usage.returncode == 2 and "ADDRESS or --all" in usage.stderr
    missing = server.kinmail("index", "rebuild", "nobody@example.test")
    assert missing.returncode == 1 and "no Maildir" in missing.stderr
