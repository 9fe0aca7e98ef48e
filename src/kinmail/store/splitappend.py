"""An append in three steps, for a caller that runs the first and the last on an event loop and only the system
calls that write files and wait for the disk in a thread (the IMAP server's APPEND,
`kinmail.imapserver.appendstore`).

1. `prepare`, with the user's lock: check the messages (flags, quota), choose each one's name in tmp/ and in
   the folder. Nothing is written yet.
2. `settle`, in a thread, without the lock, for the appends of several sessions at once: write the files to
   tmp/ and give them their INTERNALDATE, fdatasync them, rename them into new/ or cur/, fsync the
   directories. The files are durable when it returns; a scan meanwhile leaves them alone
   (`UserState.placing`). Creating a file costs the kernel 0.1-0.2 ms on some file systems, which on the event
   loop would stop every session.
3. `record`, with the lock: the UIDs, `dovecot-uidlist`, the index commit, the broadcast.

The lock is never held while the disk is waited for, and the UIDs are only given in the last step, so an append
that fails uses none. Until `record` has committed, `discard` removes the files wherever they are. A crash
between `settle` and `record` leaves durable files in the folder that the next scan indexes: the client got no
OK and may send the message again, as after a crash in any store before its commit. Keeps nothing on disk of
its own.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from kinmail.core.atomic import fsync_dirs, sync_many
from kinmail.core.log import get_logger
from kinmail.store import maildir
from kinmail.store.mailbox import Mailbox, NewMessage, Staged

log = get_logger(__name__)


def prepare(box: Mailbox, messages: Sequence[NewMessage]) -> Staged:
    """Step 1 (takes the user's lock, briefly): the messages checked and their files named, not yet written."""
    user = box.user_state
    with user.writing():
        staged = box.stage(messages, write=False)
        staged.before = box.name_files(staged).mtimes()
        user.placing.update(base for _tmp, base in staged.written)
    return staged


def _write(staged: Staged) -> None:
    """The staged messages written to their tmp/ files (left open for the sync), with their INTERNALDATE."""
    staged.fds = maildir.write_files(staged.written, staged.datas)
    try:
        for fd, date in zip(staged.fds, staged.dates, strict=True):
            if date is None:
                staged.internals.append(os.fstat(fd).st_mtime)  # what a scan of the file would find
            else:
                os.utime(fd, (date, date))
                staged.internals.append(date)
    except BaseException:
        staged.internals.clear()
        raise


def settle(batch: Sequence[Staged]) -> list[BaseException | None]:
    """Step 2 for several appends at once (in a thread that may wait for the disk, no lock): their files written
    and synced together, renamed into their folders, the folders' directories synced together. Each one's
    error, or None. The files of one user's appends are synced with one syncfs (`sync_many`); those of several
    users not, since it would also write out each user's index."""
    errors: list[BaseException | None] = [None] * len(batch)
    for n, staged in enumerate(batch):
        try:
            _write(staged)
        except OSError as exc:
            errors[n] = exc
    written = [staged for staged, error in zip(batch, errors, strict=True) if error is None]
    try:
        one_user = len({id(staged.box.user_state) for staged in written}) == 1
        sync_many([fd for staged in written for fd in staged.fds], one_fs=one_user)
    except OSError as exc:
        return [error or exc for error in errors]
    dirs: set[Path] = set()
    for n, staged in enumerate(batch):
        if errors[n] is not None:
            continue
        fs = staged.fs
        assert fs is not None
        try:
            for (tmp, _base), filename in zip(staged.written, staged.filenames, strict=True):
                target = fs.path / filename
                os.rename(tmp, target)
                staged.placed.append(target)
        except OSError as exc:
            errors[n] = exc
            continue
        dirs |= staged.dirs()
    try:
        fsync_dirs(dirs)
    except OSError as exc:
        return [error or exc for error in errors]
    return errors


def close_files(staged: Staged) -> None:
    """After `settle`: the files' descriptors closed (cheap; an event loop may call it)."""
    fds, staged.fds = staged.fds, []
    for fd in fds:
        os.close(fd)


def record(box: Mailbox, staged: Staged) -> list[int]:
    """Step 3 (takes the user's lock): the settled messages get their UIDs and enter the index; their UIDs."""
    user = box.user_state
    bases = [base for _tmp, base in staged.written]
    with user.writing():
        fs = staged.fs = box.folder_state  # a new object when the index was opened again meanwhile
        box.number(staged, fs.row.uidnext, fs.row.highestmodseq + 1)
        try:
            box.commit(staged, staged.before)
        except sqlite3.IntegrityError:
            # another process (a rebuild) listed the folder after `settle` and indexed the files itself
            found = user.db.uids_of_bases(fs.row.id, bases)
            if len(found) != len(bases):
                raise
            log.warning("store.append_indexed_elsewhere", user=user.address, folder=fs.row.name)
            staged.placed.clear()
            staged.uids = found
        user.placing.difference_update(bases)  # on a failure, `discard` takes them back first
    return staged.uids


def discard(box: Mailbox, staged: Staged) -> None:
    """After a failure before `record` committed: the files closed and removed, wherever they are."""
    box.take_back(staged)
    box.user_state.placing.difference_update(base for _tmp, base in staged.written)
