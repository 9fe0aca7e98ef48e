"""Deleting the files of expunged messages away from the event loop.

An expunge renames each file from its folder's `cur/` or `new/` into the folder's `tmp/` (so no scan sees it
again, and Maildir readers ignore it), and hands the new path to `REAPER`, whose thread unlinks the files it
was given a little later, a batch at a time. A rename only changes two directories; an unlink also frees the
file's blocks, which on a file system mounted with `discard` waits for the device (0.5–1 ms a file measured on
ext4). The thread wakes on a timer, never at the caller's request: waking a thread for each expunge costs the
caller more than the unlink. A file not yet unlinked when the process ends stays in `tmp/`, which is cleared of
old files anyway (`maildir.clean_tmp`: a renamed message keeps its old times).
"""

from __future__ import annotations

import collections
import os
import threading
import time

from kinmail.core.log import get_logger

log = get_logger(__name__)

INTERVAL = 0.2
"""Seconds between the thread's looks at what it was given."""


class Reaper:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._paths: collections.deque[str] = collections.deque()  # append and popleft are thread-safe
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, paths: list[str]) -> None:
        """Unlink these files soon (a missing one is fine)."""
        self._paths.extend(paths)
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="kinmail-reaper", daemon=True)
                    self._thread.start()

    def drain(self) -> int:
        """Unlink every file given so far, now, in the calling thread; how many there were."""
        done = 0
        while True:
            try:
                path = self._paths.popleft()
            except IndexError:
                return done
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:  # left in tmp/, cleared later with the other old files there
                log.warning("store.unlink_failed", path=os.path.basename(path), reason=exc.strerror)
            done += 1

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.drain()


REAPER = Reaper()
"""The process's one reaper (its thread starts at the first expunge)."""
