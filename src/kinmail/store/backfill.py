"""Full-text indexing in the background: new messages are stored without it, and one thread fills the FTS
table of the folders they went to once the store has been quiet for a moment.

Extracting the text of a message and adding it to the FTS5 trigram table costs more than storing the message
(a new FTS segment per small transaction, the decoding of every part), so `Mailbox.append` and `append_many`
leave it out and mark the message `fts_done=0`, and tell the store's `TextBackfill` which folder got them
(`UserState.stored_hook`; files a scan finds, such as an imported Maildir, wait for the first search); the thread indexes a batch at a time (`Mailbox.index_batch`: the text is
extracted outside the user's lock, one transaction per batch) when no message arrived and no IMAP command ran
(`busy`) for `quiet` seconds, or when a folder has waited `max_delay` seconds under steady load. SEARCH
BODY/TEXT never depends on it: it first indexes what is still pending in its folder (`Mailbox.search_text`),
and no new batch starts while it runs (`paused`, through `UserState.text_gate`). Keeps nothing on disk of its
own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from kinmail.core.log import get_logger

log = get_logger(__name__)

QUIET = 0.5
MAX_DELAY = 30.0


class TextBackfill:
    """The background indexer of one `Store`. `index_folder(address, folder)` indexes one batch and returns
    True when more of that folder may be pending."""

    def __init__(
        self, index_folder: Callable[[str, str], bool], *, quiet: float = QUIET, max_delay: float = MAX_DELAY
    ) -> None:
        self._index_folder = index_folder
        self._quiet = quiet
        self._max_delay = max_delay
        self._pending: dict[tuple[str, str], float] = {}  # (address, folder) -> when first noted
        self._last_note = 0.0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._paused = 0

    def note(self, address: str, folder: str) -> None:
        """`folder` of `address` got messages that are not indexed yet."""
        now = time.monotonic()
        with self._cond:
            if self._closed:
                return
            idle = not self._pending  # the thread then waits without a timeout: wake it
            self._pending.setdefault((address, folder), now)
            self._last_note = now
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="store-fts", daemon=True)
                self._thread.start()
            elif idle:
                self._cond.notify()
            # otherwise the thread is in a timed wait and looks at `_last_note` again when it ends: a note only
            # puts the next batch off, so waking it for each stored message would be a thread switch for nothing

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No new batch starts while the block runs: a full-text SEARCH (of any folder) has the interpreter to
        itself rather than sharing it with the indexing of mail that just arrived."""
        with self._cond:
            self._paused += 1
        try:
            yield
        finally:
            with self._cond:
                self._paused -= 1
                self._cond.notify()

    def held_back(self) -> bool:
        """Whether a search asks the indexer to stand aside (a batch under way ends early)."""
        return self._paused > 0

    def busy(self) -> None:
        """Users are at work (an IMAP command ran): like a delivery, it puts off the next batch until the store
        has been quiet for `quiet` seconds (a folder still waits no longer than `max_delay`). No lock: one
        float written, read by the thread when it next looks."""
        self._last_note = time.monotonic()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify()

    def _next(self) -> tuple[str, str] | None:
        """Wait until a folder is due; None once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if not self._pending or self._paused:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                key, first = next(iter(self._pending.items()))
                wait = min(self._last_note + self._quiet, first + self._max_delay) - now
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                del self._pending[key]
                return key

    def _run(self) -> None:
        while True:
            key = self._next()
            if key is None:
                return
            try:
                more = self._index_folder(*key)
            except Exception as exc:  # a folder deleted or a store closed meanwhile: SEARCH catches up anyway
                log.debug("store.fts_backfill_failed", user=key[0], folder=key[1], reason=str(exc))
                more = False
            if more:
                with self._cond:
                    if not self._closed:
                        self._pending.setdefault(key, time.monotonic())
