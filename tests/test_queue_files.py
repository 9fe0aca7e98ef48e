"""The spool's files: delivered messages' files are kept in `queue/free/` and written again (`FilePool`), never
read back as queued mail, and their old content never shows through."""

from __future__ import annotations

import os
import smtplib
import time
from pathlib import Path

from kinmail.queue.spool import FilePool
from tests.serverctl import HOST, KinmailServer


def test_a_kept_file_is_reused_truncated(tmp_path: Path) -> None:
    pool = FilePool(tmp_path / "free", limit=2)
    (tmp_path / "free").mkdir()
    old = tmp_path / "old.eml"
    old.write_bytes(b"x" * 5000)
    inode = old.stat().st_ino
    pool.give(old)
    assert not old.exists() and len(os.listdir(tmp_path / "free")) == 1
    fd = pool.take(tmp_path / "new.eml")
    os.write(fd, b"short")
    os.close(fd)
    new = tmp_path / "new.eml"
    assert new.read_bytes() == b"short"  # truncated: nothing of the old message is left
    assert new.stat().st_ino == inode  # the same file: no inode freed and allocated
    assert os.listdir(tmp_path / "free") == []
    fd = pool.take(tmp_path / "fresh.eml")  # none kept: a new file
    os.close(fd)
    assert (tmp_path / "fresh.eml").exists()


def test_only_so_many_files_are_kept(tmp_path: Path) -> None:
    (tmp_path / "free").mkdir()
    pool = FilePool(tmp_path / "free", limit=2)
    for n in range(4):
        path = tmp_path / f"m{n}"
        path.write_bytes(b"data")
        pool.give(path)
        assert not path.exists()
    assert len(os.listdir(tmp_path / "free")) == 2
    again = FilePool(tmp_path / "free", limit=2)
    again.load()  # after a restart the kept files are known again
    os.close(again.take(tmp_path / "a"))
    os.close(again.take(tmp_path / "b"))
    assert os.listdir(tmp_path / "free") == []


def test_delivered_mail_leaves_its_files_for_reuse_and_restarts_cleanly(tmp_path: Path) -> None:
    with KinmailServer(tmp_path / "k", services=("smtp",)) as server:
        queue = server.data_dir / "queue"
        for n in range(5):
            with smtplib.SMTP(HOST, server.port("smtp")) as client:
                client.sendmail(
                    "a@remote.example", ["alice@example.test"], f"Subject: reuse {n}\r\n\r\nx\r\n"
                )
        inbox = server.maildir("alice@example.test")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done = sum(len(os.listdir(inbox / sub)) for sub in ("new", "cur")) == 5
            if done and not list(queue.glob("*.json")) and not list(queue.glob("*.eml")):
                break
            time.sleep(0.05)
        assert not list(queue.glob("*.json")) and not list(queue.glob("*.eml"))
        kept = os.listdir(queue / "free")
        assert kept  # the files of delivered messages wait to be written again
        server.stop()
        server.start()  # kept files are not mistaken for queued mail
        with smtplib.SMTP(HOST, server.port("smtp")) as client:
            client.sendmail("a@remote.example", ["alice@example.test"], "Subject: after restart\r\n\r\ny\r\n")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if sum(len(os.listdir(inbox / sub)) for sub in ("new", "cur")) == 6:
                break
            time.sleep(0.05)
        bodies = [p.read_bytes() for sub in ("new", "cur") for p in (inbox / sub).iterdir()]
        assert len(bodies) == 6
        assert sum(b"Subject: after restart" in body for body in bodies) == 1
        assert all(body.count(b"Subject:") == 1 for body in bodies)  # no old content mixed in
