"""The current time as an RFC 5322 date-time in local time (`Date:`, `Received:`), made once a second.

`email.utils.format_datetime` of a local `datetime` cost about as much as the rest of a Received field; the text
only changes once a second. Keeps nothing on disk.
"""

from __future__ import annotations

import datetime
import time
from email.utils import format_datetime

_cached: tuple[int, str] = (-1, "")


def now_rfc5322() -> str:
    """E.g. `Fri, 04 Dec 2026 18:51:09 +0000`; thread-safe (the cache is one tuple, replaced whole)."""
    global _cached
    second = int(time.time())
    cached = _cached
    if cached[0] == second:
        return cached[1]
    text = format_datetime(datetime.datetime.fromtimestamp(second, datetime.UTC).astimezone())
    _cached = (second, text)
    return text
