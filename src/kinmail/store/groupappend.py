"""Appends to several folders, of one user or many, stored together: one sync of all their files, one of all
their directories (the kernel joins the flushes), each folder's index commit after them.

Local delivery stores the messages of a queue batch here from one thread (`kinmail.delivery.local`): the
system calls of many deliveries then no longer compete for the interpreter from several threads, and the fsync
waits of a batch overlap. (The IMAP server's APPENDs go through `kinmail.store.splitappend` instead, whose
steps that do not wait for the disk run on the event loop.) Each job keeps its own outcome —
all its messages stored, or none, with the error — as `Mailbox.append_each` would give it. Keeps nothing on disk
of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kinmail.core.atomic import fsync_dirs, sync_many
from kinmail.store.mailbox import Mailbox, NewMessage, Staged


@dataclass
class AppendJob:
    """One client's messages for one folder; `uids` or `error` are set by `append_group`."""

    mailbox: Mailbox
    messages: Sequence[NewMessage]
    uids: list[int] = field(default_factory=list)
    error: BaseException | None = None
    deferred: bool = False
    """Its user's lock was taken (a delivery, a big COPY, another process): the files are written and synced,
    and `finish_deferred` lands them, waiting for the lock, so that the rest of the batch need not wait."""
    _staged: Staged | None = None


def append_group(jobs: Sequence[AppendJob]) -> None:
    """Store every job; a job that fails leaves nothing behind and does not stop the others."""
    live: list[AppendJob] = []
    for job in jobs:
        try:
            job._staged = job.mailbox.stage(job.messages)
            live.append(job)
        except Exception as exc:
            job.error = exc
    if not live:
        return
    try:
        # the files of one user's Maildir: one syncfs from three files on (the SMTP deliveries of a burst to one
        # mailbox); for several users' appends it was slower, since it also flushes each user's index writes
        one_user = len({id(job.mailbox.user_state) for job in live}) == 1
        sync_many([fd for job in live for fd in _staged(job).fds], one_fs=one_user)
        for job in live:
            job.mailbox.written(_staged(job))
    except Exception as exc:
        _fail(live, exc)
        return
    users = {id(job.mailbox.user_state): job.mailbox.user_state for job in live}
    with contextlib.ExitStack() as locks:
        # every user's lock at once, each taken only if free this instant: the batch waits for no one
        for user in users.values():
            if locks.enter_context(user.held_now()):
                locks.enter_context(user.writing())
            else:
                for job in live:
                    if job.mailbox.user_state is user:
                        job.deferred = True
        live = [job for job in live if not job.deferred]
        counters: dict[tuple[str, int], tuple[int, int]] = {}
        befores: dict[int, tuple[int, int]] = {}
        dirs: set[Path] = set()
        placed: list[AppendJob] = []
        for job in live:
            try:
                folder = job.mailbox.folder_state
                befores.setdefault(id(folder), folder.mtimes())
                dirs |= job.mailbox.place(_staged(job), counters)
                placed.append(job)
            except Exception as exc:
                _fail([job], exc)
        try:
            fsync_dirs(dirs)
        except Exception as exc:
            _fail(placed, exc)
            return
        for job in placed:
            staged = _staged(job)
            try:
                folder = job.mailbox.folder_state
                job.mailbox.commit(staged, befores[id(folder)])
                befores[id(folder)] = (folder.row.new_mtime, folder.row.cur_mtime)
                job.uids = staged.uids
            except Exception as exc:
                _fail([job], exc)


def finish_deferred(job: AppendJob) -> list[int]:
    """Land a deferred job's messages, waiting for its user's lock (in a thread that may wait); their UIDs."""
    staged = _staged(job)
    try:
        job.mailbox.land(staged)
    except BaseException:
        job.mailbox.take_back(staged)
        raise
    return staged.uids


def _staged(job: AppendJob) -> Staged:
    assert job._staged is not None
    return job._staged


def _fail(jobs: Sequence[AppendJob], exc: BaseException) -> None:
    for job in jobs:
        if job._staged is not None:
            job.mailbox.take_back(job._staged)
        job.error = exc
