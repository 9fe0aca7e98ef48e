"""Crash safety: `kill -9` in the middle of a 1,000-message burst from 10 sessions; after a restart every message
that got `250` is in the Maildir exactly once, and no message is there twice."""

from __future__ import annotations

import collections
import re
import smtplib
import threading
import time
from pathlib import Path

from tests.serverctl import KinmailServer

SESSIONS, PER_SESSION = 10, 100
SUBJECT = re.compile(rb"^Subject: (crash-\d+-\d+)\r?$", re.M)


def burst(server: KinmailServer, session: int, acked: list[str], stop: threading.Event) -> None:
    try:
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as client:
            client.ehlo("burst.example")
            for n in range(PER_SESSION):
                if stop.is_set():
                    return
                subject = f"crash-{session}-{n}"
                body = f"Subject: {subject}\r\nFrom: load@remote.example\r\n\r\n" + "line of text\r\n" * 40
                client.mail("load@remote.example")
                client.rcpt("alice@example.test")
                code, _ = client.data(body.encode())
                if code == 250:
                    acked.append(subject)
    except (smtplib.SMTPException, OSError):
        return  # the server was killed under us


def subjects_in(folder: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for sub in ("new", "cur"):
        for path in (folder / sub).glob("*"):
            match = SUBJECT.search(path.read_bytes()[:4096])
            if match:
                counts[match.group(1).decode()] += 1
    return counts


def test_kill9_during_burst_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    server = KinmailServer(tmp_path / "crash", sections={"smtpd": {"pregreet_wait": 0}})
    server.start()
    try:
        acked: list[str] = []
        stop = threading.Event()
        threads = [threading.Thread(target=burst, args=(server, i, acked, stop)) for i in range(SESSIONS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(acked) < 400 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill9()
        stop.set()
        for thread in threads:
            thread.join(60)
        assert len(acked) >= 400
        server.start()
        folder = server.maildir("alice@example.test")
        wanted = set(acked)
        deadline = time.monotonic() + 120
        counts = subjects_in(folder)
        while time.monotonic() < deadline:
            counts = subjects_in(folder)
            drained = not list((server.data_dir / "queue").glob("*.json"))
            if wanted <= set(counts) and drained:
                break
            time.sleep(0.2)
        missing = wanted - set(counts)
        duplicated = {s: c for s, c in counts.items() if c > 1}
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
        assert not duplicated, f"delivered more than once: {dict(list(duplicated.items())[:5])}"
    finally:
        server.stop()
