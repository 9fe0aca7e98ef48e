"""Sieve state kept between deliveries: when a vacation reply last went to a sender (RFC 5230 §4.2, once per
`:days`/`:seconds` per sender and handle) and the duplicate test's history (RFC 7352).

Called by `kinmail.delivery.filtering` (from a worker thread). Keeps `data_dir/state/sieve.sqlite` (tables
`vacation` and `duplicate`, keyed by the user's address; old rows are pruned as new ones are written).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vacation (
    user TEXT NOT NULL, sender TEXT NOT NULL, handle TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (user, sender, handle));
CREATE TABLE IF NOT EXISTS duplicate (
    user TEXT NOT NULL, key TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (user, key));
"""


class SieveState:
    """Vacation and duplicate history in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def vacation_due(
        self, user: str, sender: str, handle: str, period: float, now: float | None = None
    ) -> bool:
        """True (and remembered) when no reply went to `sender` for `handle` within `period` seconds."""
        now = time.time() if now is None else now
        with self._lock:
            db = self._conn()
            row = db.execute(
                "SELECT expires FROM vacation WHERE user=? AND sender=? AND handle=?",
                (user.lower(), sender.lower(), handle),
            ).fetchone()
            if row is not None and row[0] > now:
                return False
            db.execute(
                "INSERT OR REPLACE INTO vacation (user, sender, handle, expires) VALUES (?, ?, ?, ?)",
                (user.lower(), sender.lower(), handle, now + period),
            )
            db.execute("DELETE FROM vacation WHERE expires < ?", (now,))
            return True

    def duplicate_seen(self, user: str, key: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT expires FROM duplicate WHERE user=? AND key=?", (user.lower(), key))
                .fetchone()
            )
        return row is not None and row[0] > now

    def duplicate_remember(self, user: str, key: str, seconds: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            db = self._conn()
            db.execute(
                "INSERT OR REPLACE INTO duplicate (user, key, expires) VALUES (?, ?, ?)",
                (user.lower(), key, now + seconds),
            )
            db.execute("DELETE FROM duplicate WHERE expires < ?", (now,))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


_STATES: dict[Path, SieveState] = {}
_STATES_LOCK = threading.Lock()


def state_for(data_dir: Path) -> SieveState:
    """The shared SieveState of `data_dir`."""
    path = Path(data_dir) / "state" / "sieve.sqlite"
    with _STATES_LOCK:
        state = _STATES.get(path)
        if state is None:
            state = _STATES[path] = SieveState(path)
        return state
