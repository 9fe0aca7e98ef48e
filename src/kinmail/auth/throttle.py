"""Login throttling: failures counted per client IP (IPv6 by /64) and per user name over a sliding window.

After `throttle_free_failures` failures the answer to each further attempt is delayed, doubling from 0.5 s
up to `throttle_max_delay`; after `throttle_lockout_failures` failures in the window every attempt is refused
without checking the password until failures age out. A successful login clears the counts of its IP and
its user. Loopback is not exempt.

The counts live in memory (bounded in size), so checking them costs no disk access. With a `path`, every
failure and every clearing is also written through to a SQLite file, and the first use after a start reads
the failures still inside the window back, so a restart does not wipe an attacker's record. Timestamps are
wall-clock seconds for that reason. A state file that cannot be opened or written is logged and the
throttle goes on in memory only: logins never fail because of it.

Used only by `kinmail.auth.authenticator`. Keeps `data_dir/state/auth.sqlite` (table `failures(key, at)`).
"""

from __future__ import annotations

import ipaddress
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kinmail.core.log import get_logger

log = get_logger(__name__)

BASE_DELAY = 0.5
MAX_KEYS = 50_000
PRUNE_EVERY = 1000  # failures between two sweeps of the state file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failures_key ON failures (key, at);
"""


@dataclass(frozen=True)
class Limits:
    free_failures: int
    max_delay: float
    lockout_failures: int
    window: float

    @property
    def kept(self) -> int:
        """How many recent failures are kept per key (enough to tell a lockout)."""
        return max(self.lockout_failures, 1) * 2


def ip_key(ip: str | None) -> str | None:
    """The throttling key of a client address: IPv4 as is, IPv6 by its /64 network."""
    if not ip:
        return None
    text = ip.strip("[]").split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return f"ip:{ip}"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return f"ip:{addr.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((int(addr) >> 64 << 64, 64))}"
    return f"ip:{addr}"


class Throttle:
    """Failure counts per key ("ip:..." or "user:..."), pruned to the window at each use.

    `clock` gives wall-clock seconds (persisted timestamps must mean the same after a restart); `path` is the
    SQLite file the counts are written through to, or None to keep them in memory only."""

    def __init__(self, clock: Callable[[], float] = time.time, path: Path | None = None) -> None:
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._loaded = path is None
        self._writes = 0

    # --- the state file ----------------------------------------------------------------------------------
    def _load(self, limits: Limits) -> None:
        """Open the state file once and read back the failures still inside the window."""
        self._loaded = True
        assert self._path is not None
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, check_same_thread=False, timeout=5, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute("DELETE FROM failures WHERE at <= ?", (self._clock() - limits.window,))
            rows = db.execute("SELECT key, at FROM failures ORDER BY at").fetchall()
        except sqlite3.Error as exc:
            log.error("auth.state_unavailable", path=str(self._path), reason=str(exc))
            return
        self._db = db
        for key, at in rows:
            stamps = self._failures.get(key)
            if stamps is None:
                stamps = self._failures[key] = deque(maxlen=limits.kept)
            stamps.append(float(at))
        if rows:
            log.info("auth.state_loaded", path=str(self._path), keys=len(self._failures), failures=len(rows))

    def _write(self, sql: str, rows: Iterable[tuple[str | float, ...]]) -> None:
        if self._db is None:
            return
        try:
            self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            log.error("auth.state_write_failed", path=str(self._path), reason=str(exc))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- counting ----------------------------------------------------------------------------------------
    def _count(self, key: str, window: float) -> int:
        stamps = self._failures.get(key)
        if not stamps:
            return 0
        horizon = self._clock() - window
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
            return 0
        return len(stamps)

    def failures(self, keys: list[str], limits: Limits) -> int:
        """The highest failure count among `keys` within the window."""
        if not self._loaded:
            self._load(limits)
        return max((self._count(key, limits.window) for key in keys), default=0)

    def locked(self, keys: list[str], limits: Limits) -> bool:
        return self.failures(keys, limits) >= limits.lockout_failures

    def delay(self, keys: list[str], limits: Limits) -> float:
        """Seconds to wait before answering the next attempt: 0 up to the free failures, then doubling."""
        excess = self.failures(keys, limits) - limits.free_failures
        if excess < 0 or limits.max_delay <= 0:
            return 0.0
        return float(min(limits.max_delay, BASE_DELAY * 2 ** min(excess, 30)))

    def fail(self, keys: list[str], limits: Limits) -> None:
        if not self._loaded:
            self._load(limits)
        now = self._clock()
        for key in keys:
            stamps = self._failures.get(key)
            if stamps is None:
                stamps = self._failures[key] = deque(maxlen=limits.kept)
            else:
                self._failures.move_to_end(key)
            stamps.append(now)
        while len(self._failures) > MAX_KEYS:
            self._failures.popitem(last=False)
        self._write("INSERT INTO failures (key, at) VALUES (?, ?)", [(k, now) for k in keys])
        # Rows that left the window are dropped now and then, so the file stays about as small as the memory.
        self._writes += 1
        if self._writes % PRUNE_EVERY == 0:
            self._write("DELETE FROM failures WHERE at <= ?", [(now - limits.window,)])

    def succeed(self, keys: list[str]) -> None:
        cleared = [key for key in keys if self._failures.pop(key, None) is not None]
        if cleared:  # a login without earlier failures writes nothing
            self._write("DELETE FROM failures WHERE key = ?", [(k,) for k in cleared])
