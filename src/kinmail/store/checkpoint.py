"""The users' index WALs copied back into their database files by a background thread, not inside a commit.

SQLite checkpoints a WAL once it holds 1000 pages, inside whichever commit crosses that mark, and a checkpoint
syncs the file twice: when that commit is a STORE or an EXPUNGE on the IMAP server's event loop, every session
waits for the disk. The index connections turn this off (`PRAGMA wal_autocheckpoint=0`, `index._connect`), and
one thread per `Store` looks at each open user every `EVERY` seconds: after `COMMITS` commits, or once the WAL
file has grown by `GROWTH` bytes (a big transaction, a rebuild), it checkpoints that index through a connection
of its own. PASSIVE: it neither waits for nor holds up the user's readers and writers; what it cannot copy yet
(a reader still on an older snapshot) it copies the next time. Keeps nothing on disk of its own.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kinmail.core.log import get_logger

if TYPE_CHECKING:
    from kinmail.store.user import UserState

log = get_logger(__name__)

EVERY = 1.0
COMMITS = 200
"""About SQLite's own 1000 pages: a commit of a flag change, an expunge or an append writes 3 to 6."""
GROWTH = 4 * 1024 * 1024


class Checkpointer:
    """Checkpoints the indexes of the users `users()` returns; `check()` is one look at all of them."""

    def __init__(self, users: Callable[[], list[UserState]], every: float = EVERY) -> None:
        self._users = users
        self._every = every
        self._seen: dict[str, tuple[int, int]] = {}  # address -> (commits, WAL size) at its last checkpoint
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="store-checkpoint", daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def check(self) -> int:
        """Checkpoint every index that is due; returns how many were."""
        done = 0
        for user in self._users():
            db = getattr(user, "db", None)
            if db is None:
                continue
            wal = _wal_size(user.index_path)
            commits = db.commits
            last_commits, last_size = self._seen.get(user.address, (0, 0))
            if commits < last_commits:  # the index was opened again: its count started anew
                last_commits = 0
            if commits - last_commits < COMMITS and wal - last_size < GROWTH:
                continue
            if _checkpoint(user.index_path):
                done += 1
            self._seen[user.address] = (commits, _wal_size(user.index_path))
        return done

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.check()
            except Exception:  # not expected; the next look tries again
                log.exception("store.checkpoint_failed")


def _wal_size(index_path: Path) -> int:
    try:
        return os.stat(f"{index_path}-wal").st_size
    except FileNotFoundError:
        return 0


def _checkpoint(index_path: Path) -> bool:
    try:
        # mode=rw: an index removed meanwhile is not made again, empty, here
        uri = f"file:{urllib.parse.quote(str(index_path))}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
    except sqlite3.Error as exc:
        log.debug("store.checkpoint_skipped", index=index_path.name, reason=str(exc))
        return False
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return True
    except sqlite3.Error as exc:  # busy (another checkpoint, a rebuild replacing the file): next time
        log.debug("store.checkpoint_skipped", index=index_path.name, reason=str(exc))
        return False
    finally:
        conn.close()
