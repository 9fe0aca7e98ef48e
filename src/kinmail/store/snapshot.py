"""A compact snapshot of a folder's message list, so that opening a big folder (IMAP SELECT) is cheap.

Used by `kinmail.store.user` only. Kept in the index (`snapshots` table: folder, the MODSEQ it reflects, one
blob): packed arrays of UIDs, MODSEQs, sizes and dates, a table of distinct flag sets, and the file names.
Loading it and applying the few rows changed since its MODSEQ is several times faster than reading every row;
it is rewritten when that difference grows. Being part of the index, it is a cache like the rest.
"""

from __future__ import annotations

import array
import contextlib
import gc
import marshal
from collections.abc import Iterator
from functools import partial
from typing import Any

from kinmail.store.types import MessageInfo, flagset

MIN_MESSAGES = 2000  # smaller folders load fast enough row by row
MAX_DELTA = 2000  # rewrite the snapshot when more rows than this changed since it was taken
_make = partial(tuple.__new__, MessageInfo)


def encode(infos: dict[int, MessageInfo]) -> bytes:
    values = list(infos.values())
    table: dict[str, int] = {}
    flag_idx = array.array("I", (table.setdefault(" ".join(sorted(i.flags)), len(table)) for i in values))
    return marshal.dumps(
        (
            1,
            array.array("Q", (i.uid for i in values)).tobytes(),
            array.array("Q", (i.modseq for i in values)).tobytes(),
            array.array("Q", (i.size for i in values)).tobytes(),
            array.array("d", (i.internaldate for i in values)).tobytes(),
            flag_idx.tobytes(),
            list(table),
            "\0".join(i.filename for i in values),
        )
    )


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects that hold no cycles: it would
    otherwise walk the growing list again and again (half the time of loading 100,000 messages)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _unpack(code: str, data: Any) -> list[Any]:
    arr = array.array(code)
    arr.frombytes(data)
    return arr.tolist()


def decode(data: bytes) -> dict[int, MessageInfo] | None:
    """The message list of a snapshot, or None when it cannot be read (then the rows are read instead)."""
    with no_gc():
        return _decode(data)


def _decode(data: bytes) -> dict[int, MessageInfo] | None:
    try:
        version, uids_b, modseqs_b, sizes_b, dates_b, flags_b, table, names = marshal.loads(data)
        if version != 1:
            return None
        uids = _unpack("Q", uids_b)
        sets = [flagset(text) for text in table]
        flags = [sets[i] for i in _unpack("I", flags_b)]
        filenames = names.split("\0") if names else []
        columns = (
            uids,
            flags,
            _unpack("Q", modseqs_b),
            _unpack("Q", sizes_b),
            _unpack("d", dates_b),
            filenames,
        )
        if len({len(c) for c in columns}) != 1:
            return None
        return dict(zip(uids, map(_make, zip(*columns, strict=True)), strict=True))
    except (ValueError, TypeError, EOFError, IndexError):
        return None
