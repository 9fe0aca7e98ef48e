"""The spool's files: delivered messages' files are kept in `queue/free/` and written again (`FilePool`), never
read back as queued mail, and their old content never shows through."""

from __future__ import annotations

import os
import smtplib
import time
from pathlib import Path

from kinmail.queue.spool import FilePool, SpoolFile
from tests.serverctl import HOST, KinmailServer
from tests.test_pop3_helpers import count_files


def test_a_kept_file_is_written_again_and_cut_to_its_new_length(tmp_path: Path) -> None:
    (tmp_path / "free").mkdir()
    (tmp_path / "tmp").mkdir()
    pool = FilePool(tmp_path / "free", limit=2)
    old = tmp_path / "old.eml"
    old.write_bytes(b"x" * 5000)
    inode = old.stat().st_ino
    pool.give(old)
    assert not old.exists() and len(os.listdir(tmp_path / "free")) == 1
    spool = SpoolFile(tmp_path / "tmp", pool)
    spool.write(b"short")
    spool.close()
    assert spool.path.read_bytes() == b"short"  # nothing of the old message is left
    assert spool.path.stat().st_ino == inode  # the same file: no inode freed and allocated
    assert os.listdir(tmp_path / "free") == []
    fd, reused = pool.take(tmp_path / "fresh.eml")  # none kept: a new file
    os.close(fd)
    assert not reused and (tmp_path / "fresh.eml").exists()
    refused = SpoolFile(tmp_path / "tmp", pool)
    refused.write(b"too big")
    refused.discard()  # a refused message's file is kept too, and gone from tmp/
    assert not refused.path.exists() and len(os.listdir(tmp_path / "free")) == 1


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
    for name in ("a", "b"):
        fd, reused = again.take(tmp_path / name)
        os.close(fd)
        assert reused
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
            done = count_files(server, "alice@example.test") == 5
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
            if count_files(server, "alice@example.test") == 6:
                break
            time.sleep(0.05)
        bodies = [p.read_bytes() for sub in ("new", "cur") for p in (inbox / sub).iterdir()]
        assert len(bodies) == 6
        assert sum(b"Subject: after restart" in body for body in bodies) == 1
        assert all(body.count(b"Subject:") == 1 for body in bodies)  # no old content mixed in
