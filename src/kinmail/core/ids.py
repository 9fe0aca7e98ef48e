"""Short unique ids for connections (`cid`) and queued messages (`queue_id`)."""

from __future__ import annotations

import itertools
import os
import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTVWXYZ"
_counter = itertools.count()


def _encode(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_cid() -> str:
    """A connection id: 8 characters, unique within a process run."""
    return _encode((os.getpid() << 24 | next(_counter)) ^ secrets.randbits(20), 8)


def new_queue_id() -> str:
    """A queue id that sorts by creation time: microseconds since the epoch then random bits."""
    return _encode(time.time_ns() // 1000, 11) + _encode(secrets.randbits(25), 5)
