"""The clock the queue schedules by: wall time plus an optional offset that tests control.

`now()` is `time.time()` plus, when the environment variable `KINMAIL_TEST_CLOCK` names a file, the float in
that file (seconds). The file is re-read at most once a second, so a test moves time forward by writing a
bigger number into it instead of sleeping. TEST-ONLY: production never sets `KINMAIL_TEST_CLOCK`; a missing
or unreadable file counts as offset 0. Used by `kinmail.queue` for retries, backoff, delay warnings and expiry.
Keeps nothing on disk.
"""

from __future__ import annotations

import os
import threading
import time

ENV_VAR = "KINMAIL_TEST_CLOCK"
_REREAD_SECONDS = 1.0

_lock = threading.Lock()
_offset = 0.0
_read_at = float("-inf")


def _read_offset(path: str) -> float:
    try:
        with open(path, encoding="ascii") as handle:
            return float(handle.read().strip() or 0.0)
    except (OSError, ValueError):
        return 0.0


def offset() -> float:
    """The test offset in seconds (0 outside tests)."""
    global _offset, _read_at
    path = os.environ.get(ENV_VAR)
    if not path:
        return 0.0
    mono = time.monotonic()
    with _lock:
        if mono - _read_at >= _REREAD_SECONDS:
            _offset = _read_offset(path)
            _read_at = mono
        return _offset


def now() -> float:
    """Seconds since the epoch, as the queue sees them."""
    return time.time() + offset()


def parse_duration(text: str) -> float:
    """A Postfix-style duration ("300", "30s", "5m", "4h", "5d", "1w") in seconds; raises ValueError."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if not text:
        raise ValueError("empty duration")
    if text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)
