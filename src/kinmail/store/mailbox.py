"""`Mailbox`: one open folder — its messages, reading them, and every change to them.

Called by the IMAP server (SELECT/EXAMINE, FETCH, STORE, COPY, MOVE, EXPUNGE, SEARCH, IDLE), POP3, webmail and
`UserMailboxes.deliver`. Writes follow the Maildir protocol (tmp → fsync → rename into new/ or cur/; the UID
goes into `dovecot-uidlist`; fsync of the directory), then the index commits, and only then is a `Change`
broadcast. The index commits of new messages, flag changes and expunges do not wait for the disk (the Maildir
holds all of it: a power cut may undo a flag change or an expunge and renumber the newest messages, never lose
one; see docs/store.md); full text is indexed later (`kinmail.store.backfill`). Reading methods serve the
in-memory message list (`get` never touches the disk or the index); `refresh()` and `messages()` first catch up
with what other processes committed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kinmail.core.atomic import fsync_dirs, read_all, sync_many
from kinmail.core.log import get_logger
from kinmail.store import maildir, reaper
from kinmail.store.errors import MessageGone, NoSuchFolder, QuotaExceeded, StoreError
from kinmail.store.index import UID_BITS, UID_MASK, FolderRow
from kinmail.store.textindex import extract_text, query_form
from kinmail.store.types import ChangeKind, FolderStatus, MessageInfo, flagset, flagtext

if TYPE_CHECKING:
    from kinmail.store.user import FolderState, UserState

log = get_logger(__name__)

FlagMode = Literal["set", "add", "remove"]
FTS_BATCH = 500
"""Messages are stored without their full text; `search_text` and the store's `TextBackfill` index them in
batches of this many (one FTS5 transaction each)."""
_NOT_ATOM = frozenset('(){ %*"\\]')


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in their canonical case; `\\Recent` (never stored) and empty strings dropped."""
    out = {maildir.canonical_flag(f) for f in flags if f}
    out.discard("\\Recent")
    for flag in out:
        if flag.startswith("\\") and flag not in maildir.SYSTEM_FLAGS.values():
            raise StoreError(f"unknown system flag {flag}")
        if len(flag) > 128 or any(c in _NOT_ATOM or not 0x20 < ord(c) < 0x7F for c in flag.lstrip("\\")):
            raise StoreError(f"invalid keyword {flag!r}")  # RFC 9051 §9: flag-keyword is an atom
    return flagset(flagtext(out))  # one shared set per distinct set of flags: a frozenset is 216 bytes


_USAGE: weakref.WeakKeyDictionary[UserState, tuple[tuple[int, int, int], int]] = weakref.WeakKeyDictionary()
"""Bytes used per user, with the `_usage_key` they were counted at (the delivery path's quota check)."""


def _usage_key(user: UserState) -> tuple[int, int, int]:
    """Changes whenever anything changed the user's index: it was reopened, another process committed
    (`PRAGMA data_version`, as the catch-up at the start of the lock hold read it: the current value while the
    `flock` is held, `UserState.data_version_seen`) or this connection changed a row (`total_changes`). Call
    with the user's lock held."""
    return id(user.db), user.data_version_seen, user.db.conn.total_changes


def _take_back(paths: list[Path]) -> None:
    """Remove the files of a store that failed before its index commit: from tmp/, or already renamed into the
    folder (all or nothing — a file left there would be found by the next scan, and a retried delivery stored
    twice). The caller still has the message and reports the failure."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("store.take_back_failed", path=path.name, reason=exc.strerror)


NewMessage = tuple[bytes, Iterable[str], float | None]
"""A message to add: its bytes, its flags, its INTERNALDATE (None: now)."""


class Staged:
    """Messages on their way into one folder (`Mailbox.stage`, `place`, `commit`)."""

    __slots__ = (
        "before",
        "box",
        "datas",
        "dates",
        "fds",
        "filenames",
        "first_modseq",
        "flagsets",
        "fs",
        "internals",
        "placed",
        "total",
        "uids",
        "written",
    )

    def __init__(
        self, box: Mailbox, datas: list[bytes], flagsets: list[frozenset[str]], dates: list[float | None]
    ):
        self.box = box
        self.datas = datas
        self.flagsets = flagsets
        self.dates = dates
        self.total = sum(len(d) for d in datas)
        self.written: list[tuple[Path, str]] = []  # (tmp path, base name)
        self.fds: list[int] = []  # open until their sync
        self.placed: list[Path] = []  # renamed into the folder, not yet committed
        self.filenames: list[str] = []
        self.internals: list[float] = []
        self.uids: list[int] = []
        self.first_modseq = 0
        self.fs: FolderState | None = None
        self.before = (0, 0)  # the folder's directory mtimes before the first file went in (`commit`)

    def dirs(self) -> set[Path]:
        """The folder's directories the files go to (`Mailbox.name_files`): to fsync once they are in."""
        assert self.fs is not None
        return {self.fs.path / filename.split("/")[0] for filename in self.filenames}


class Mailbox:
    """An open folder of one user. Safe to share between threads; cheap to create."""

    def __init__(self, user: UserState, folder_id: int, quota: int | None = None) -> None:
        self._user = user
        self._id = folder_id
        fs = user.folder_by_id(folder_id)
        self._uidvalidity = fs.row.uidvalidity
        self._name = fs.row.name
        self.quota = quota

    # --- state --------------------------------------------------------------------------------------------
    @property
    def _fs(self) -> FolderState:
        fs = self._user.folders.get(self._id)
        if fs is not None and fs.row.uidvalidity == self._uidvalidity:
            self._name = fs.row.name
            return fs
        # the index was rebuilt (new folder ids) or the folder went away: find it again by name
        folder_id = self._user.by_name.get(self._name)
        fs = self._user.folders.get(folder_id) if folder_id is not None else None
        if fs is None or folder_id is None or fs.row.uidvalidity != self._uidvalidity:
            raise NoSuchFolder(f"folder {self._name!r} was deleted")
        self._id = folder_id
        return fs

    @property
    def user_state(self) -> UserState:
        return self._user

    @property
    def folder_state(self) -> FolderState:
        return self._fs

    @property
    def name(self) -> str:
        return self._fs.row.name

    @property
    def uidvalidity(self) -> int:
        return self._fs.row.uidvalidity

    @property
    def uidnext(self) -> int:
        return self._fs.row.uidnext

    @property
    def highestmodseq(self) -> int:
        return self._fs.row.highestmodseq

    @property
    def special_use(self) -> str | None:
        return self._fs.row.special_use

    def held_now(
        self, on_lease: Callable[[UserState], None] | None = None
    ) -> contextlib.AbstractContextManager[bool]:
        """The user's lock, if free this instant (`UserState.held_now`): an event loop runs short calls
        itself inside it instead of handing them to a thread."""
        return self._user.held_now(on_lease)

    def exists(self) -> int:
        """Number of messages (EXISTS), from memory when the list is loaded, else one index query."""
        with self._user.reading():
            fs = self._fs
            if fs.infos is not None:
                return len(fs.infos)
            return self._user.db.count(fs.row.id)

    def status(self) -> FolderStatus:
        """STATUS counters straight from the index (does not load the message list)."""
        with self._user.reading():
            fs = self._fs
            if fs.infos is not None:
                infos = fs.infos.values()
                return FolderStatus(
                    messages=len(fs.infos),
                    uidnext=fs.row.uidnext,
                    uidvalidity=fs.row.uidvalidity,
                    unseen=sum(1 for i in infos if "\\Seen" not in i.flags),
                    deleted=sum(1 for i in infos if "\\Deleted" in i.flags),
                    size=sum(i.size for i in infos),
                    highestmodseq=fs.row.highestmodseq,
                )
            row = self._user.db.conn.execute(
                "SELECT count(*), coalesce(sum(size), 0),"
                " coalesce(sum(instr(' ' || flags || ' ', ' \\Seen ') = 0), 0),"
                " coalesce(sum(instr(' ' || flags || ' ', ' \\Deleted ') > 0), 0)"
                " FROM messages WHERE folder=?",
                (fs.row.id,),
            ).fetchone()
            return FolderStatus(
                messages=int(row[0]),
                uidnext=fs.row.uidnext,
                uidvalidity=fs.row.uidvalidity,
                unseen=int(row[2]),
                deleted=int(row[3]),
                size=int(row[1]),
                highestmodseq=fs.row.highestmodseq,
            )

    def refresh(self) -> bool:
        """Catch up with other processes and pick up files other programs added, renamed or removed.

        Cheap when nothing changed (two `stat` calls); returns True when the folder changed.
        """
        with self._user.reading():
            fs = self._fs
            before = fs.row.highestmodseq
            self._user.scan(fs)
            return self._fs.row.highestmodseq != before

    def messages(self) -> list[MessageInfo]:
        """Every message in UID order (kept in memory per user and folder, updated incrementally)."""
        return self.messages_at()[1]

    def messages_at(self) -> tuple[int, list[MessageInfo]]:
        """`messages()` with the HIGHESTMODSEQ they are as of (read together, under the user's lock)."""
        with self._user.reading():
            fs = self._fs
            infos = self._user.infos(fs)
            return fs.row.highestmodseq, list(infos.values())

    def uids(self) -> list[int]:
        with self._user.reading():
            return list(self._user.infos(self._fs))

    def get(self, uid: int) -> MessageInfo | None:
        """The message with this UID, or None; served from memory."""
        fs = self._fs
        infos = fs.infos
        if infos is None:
            with self._user.reading():
                infos = self._user.infos(fs)
        return infos.get(uid)

    def peek(self, uid: int) -> MessageInfo | None:
        """The message with this UID from the message list in memory; None when it is not there or the list
        is not loaded. Takes no lock and never touches the disk: an event loop may call it."""
        infos = self._fs.infos
        return None if infos is None else infos.get(uid)

    def loaded_count(self) -> int | None:
        """How many messages the list in memory holds; None when it is not loaded. No lock, no disk."""
        infos = self._fs.infos
        return None if infos is None else len(infos)

    def path(self, uid: int) -> str:
        """The message file's current path (it changes when flags change)."""
        info = self.get(uid)
        if info is None:
            raise MessageGone(f"message {uid} was expunged")
        return os.path.join(self._fs.path, info.filename)

    def read(self, uid: int) -> bytes:
        """The whole message with CRLF line ends; raises MessageGone when it was removed."""
        for attempt in range(2):
            info = self.get(uid)
            if info is None:
                raise MessageGone(f"message {uid} was expunged")
            try:
                data = read_all(os.path.join(self._fs.path, info.filename), info.size)
                # the size counts CRLF line ends: a file of exactly that size has no bare LF to convert
                return data if len(data) == info.size else maildir.to_crlf(data)
            except FileNotFoundError:
                if attempt == 0:
                    self._user.scan(self._fs, force=True)
        raise MessageGone(f"message {uid} is gone")

    # --- adding messages ----------------------------------------------------------------------------------
    def append(self, data: bytes, flags: Iterable[str] = (), internaldate: float | None = None) -> int:
        """Add a message (IMAP APPEND, delivery); durable when it returns; returns its UID."""
        return self.append_each([(data, flags, internaldate)])[0]

    def append_many(
        self, messages: Sequence[bytes], flags: Iterable[str] = (), internaldate: float | None = None
    ) -> list[int]:
        """Add several messages at once (group commit for delivery); durable when it returns; their UIDs."""
        return self.append_each([(data, flags, internaldate) for data in messages])

    def append_each(self, messages: Sequence[NewMessage]) -> list[int]:
        """Add messages, each with its own flags and INTERNALDATE (MULTIAPPEND), with one group commit:
        durable when it returns; their UIDs.

        Each file is written to tmp/, then all are fdatasynced at once; under the lock, one rename pass, one
        `dovecot-uidlist` append, one sync of the target directories and one index transaction. All or nothing:
        on an error before the commit no UID is assigned and the files are removed again, also those already
        renamed into the folder (`_take_back`). `store.groupappend` runs the same stages for several folders.
        """
        if not messages:
            return []
        staged = self.stage(messages)
        try:
            sync_many(staged.fds)
            self.written(staged)
            self.land(staged)
        except BaseException:
            self.take_back(staged)
            raise
        return staged.uids

    # --- the stages of an append (`append_each`, `store.groupappend`) ---------------------------------------
    def stage(self, messages: Sequence[NewMessage], *, write: bool = True) -> Staged:
        """Check the messages (flags, quota) and write their files to tmp/, not yet synced (`Staged.fds`); with
        `write=False` only name them there (`splitappend.settle` writes them)."""
        datas = [maildir.to_crlf(data) for data, _flags, _date in messages]
        staged = Staged(
            self, datas, [normalize_flags(f) for _d, f, _t in messages], [t for _d, _f, t in messages]
        )
        self._check_quota_cached(staged.total)
        if not write:
            staged.written = maildir.tmp_names(self._fs.path, datas)
            return staged
        try:
            staged.written, staged.fds = maildir.write_tmp_unsynced(self._fs.path, datas)
        except BaseException:
            self.take_back(staged)
            raise
        return staged

    def written(self, staged: Staged) -> None:
        """After the files' sync: close them and give them their INTERNALDATE."""
        fds, staged.fds = staged.fds, []
        for fd in fds:
            os.close(fd)
        for (tmp, _base), date in zip(staged.written, staged.dates, strict=True):
            if date is not None:
                os.utime(tmp, (date, date))

    def land(self, staged: Staged) -> None:
        """`place`, the directories' fsync and `commit` under the user's lock, for synced files (`written`);
        the caller takes the files back if it raises."""
        with self._user.writing():
            before = self._fs.mtimes()
            fsync_dirs(self.place(staged, {}))
            self.commit(staged, before)

    def place(self, staged: Staged, counters: dict[tuple[str, int], tuple[int, int]]) -> set[Path]:
        """With the user's lock held: rename the files into the folder and record their UIDs in
        `dovecot-uidlist`; returns the directories to fsync before `commit`. `counters` maps (user, folder id) to
        the next (UID, MODSEQ) of stagings placed but not yet committed in the same batch."""
        fs = self.name_files(staged)
        key = (self._user.address, fs.row.id)
        first_uid, first_modseq = counters.get(key, (fs.row.uidnext, fs.row.highestmodseq + 1))
        for (tmp, _base), filename in zip(staged.written, staged.filenames, strict=True):
            os.rename(tmp, fs.path / filename)
            staged.placed.append(fs.path / filename)
        staged.internals = [
            date if date is not None else os.stat(path).st_mtime
            for date, path in zip(staged.dates, staged.placed, strict=True)
        ]
        self.number(staged, first_uid, first_modseq)
        counters[key] = (first_uid + len(staged.uids), first_modseq + len(staged.uids))
        return staged.dirs()

    def name_files(self, staged: Staged) -> FolderState:
        """With the lock held: each staged file's name in the folder (new/ without flags, cur/ with them, the
        keywords as the folder's letters); returns the folder."""
        fs = staged.fs = self._fs
        keywords = fs.keywords
        staged.filenames = [
            maildir.filename_for(base, keywords.info_for(flags), new=not flags)
            for (_tmp, base), flags in zip(staged.written, staged.flagsets, strict=True)
        ]
        return fs

    def number(self, staged: Staged, first_uid: int, first_modseq: int) -> None:
        """With the lock held: the staged messages' UIDs and MODSEQs from these on, recorded in
        `dovecot-uidlist` before `commit` puts them in the index."""
        assert staged.fs is not None
        staged.uids = list(range(first_uid, first_uid + len(staged.datas)))
        staged.first_modseq = first_modseq
        bases = [base for _tmp, base in staged.written]
        self._user.append_uidlist(staged.fs, list(zip(staged.uids, bases, strict=True)))

    def commit(self, staged: Staged, before: tuple[int, int]) -> None:
        """With the lock held, after `place` and the directories' fsync: one index transaction for the
        messages, then the folder's list in memory and the change broadcast. `before` is the directories'
        mtimes before the first `place` in the folder (`_note_own_write`)."""
        user = self._user
        fs = staged.fs
        assert fs is not None
        added: list[MessageInfo] = []
        usage_before = _usage_key(user)
        with user.db.transaction(durable=False):
            for n, uid in enumerate(staged.uids):
                size, modseq = len(staged.datas[n]), staged.first_modseq + n
                filename, internal = staged.filenames[n], staged.internals[n]
                flagset_ = staged.flagsets[n]
                base = staged.written[n][1]
                user.db.insert_message(
                    fs.row.id, uid, base, filename, modseq, flagtext(set(flagset_)), size, internal
                )
                added.append(MessageInfo(uid, flagset_, modseq, size, internal, filename))
            row = self._write_row(fs, before, staged.uids[-1] + 1, staged.first_modseq + len(staged.uids) - 1)
        staged.placed.clear()  # committed: the files are the folder's now
        cached = _USAGE.get(user)
        if cached is not None and cached[0] == usage_before:
            _USAGE[user] = (_usage_key(user), cached[1] + staged.total)
        self._after_commit(fs, row, added)
        user.queue_change(fs, ChangeKind.APPEND, staged.uids)
        user.note_text_work(fs.row.name)
        log.debug("store.append", user=user.address, folder=fs.row.name, uids=len(staged.uids))

    def take_back(self, staged: Staged) -> None:
        """After a failure before `commit`: close and remove the staged files, wherever they are."""
        for fd in staged.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        staged.fds = []
        _take_back([tmp for tmp, _base in staged.written] + staged.placed)
        staged.placed.clear()

    def _check_quota_cached(self, size: int) -> None:
        """`_check_quota` without a SUM over every message of the user on each delivery: the bytes used are
        kept per user while nothing but `append_many` changed the index (see `_usage_key`)."""
        if self.quota is None:
            return
        user = self._user
        with user.reading():
            key = _usage_key(user)
            cached = _USAGE.get(user)
            if cached is not None and cached[0] == key:
                used = cached[1]
            else:
                used = user.db.usage()[0]
                _USAGE[user] = (key, used)
        if used + size > self.quota:
            raise QuotaExceeded(f"mailbox full: {used + size} bytes would exceed the quota of {self.quota}")

    def _check_quota(self, size: int) -> None:
        if self.quota is None:
            return
        with self._user.reading():
            used, _count = self._user.db.usage()
        if used + size > self.quota:
            raise QuotaExceeded(f"mailbox full: {used + size} bytes would exceed the quota of {self.quota}")

    def _write_row(
        self, fs: FolderState, before: tuple[int, int], uidnext: int, modseq: int, stale: int = 0
    ) -> FolderRow:
        """In a change's transaction: the folder's new counters in one statement, with the directories' mtimes
        after our own change unless someone else changed them before us (`before`), and `stale` more stale
        uidlist lines. Returns the row as it is once committed (`_after_commit` puts it in place)."""
        row = fs.row
        scan: tuple[int, int, int] | None = None
        if before == (row.new_mtime, row.cur_mtime):
            after = fs.mtimes()
            scan = (after[0], after[1], time.time_ns())
        new = replace(row, uidnext=uidnext, highestmodseq=modseq, stale_uidlist=row.stale_uidlist + stale)
        if scan is not None:
            new = replace(new, new_mtime=scan[0], cur_mtime=scan[1], scanned_at=scan[2])
        self._user.db.set_folder_state(row.id, uidnext, modseq, scan, new.stale_uidlist if stale else None)
        return new

    def _after_commit(
        self, fs: FolderState, row: FolderRow, added: Iterable[MessageInfo] = (), removed: Iterable[int] = ()
    ) -> None:
        """Put the folder row written by `_write_row` and the change in the loaded message list, after the
        commit."""
        fs.row = row
        if fs.infos is not None:
            for uid in removed:
                fs.infos.pop(uid, None)
            for info in added:
                fs.infos[info.uid] = info
            fs.cache_modseq = fs.row.highestmodseq

    # --- flags --------------------------------------------------------------------------------------------
    def store_flags(
        self,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: FlagMode = "set",
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageInfo], list[int]]:
        """Set, add or remove flags (IMAP STORE; UNCHANGEDSINCE of RFC 7162 §3.1.3).

        Returns the messages whose flags changed (with their new MODSEQ) and the UIDs that failed the
        UNCHANGEDSINCE test (for the MODIFIED response code). Messages whose flags would not change keep
        their MODSEQ. Unknown UIDs are ignored.
        """
        wanted = normalize_flags(flags)
        user = self._user
        with user.writing():
            fs = self._fs
            infos = user.infos(fs)
            plans: list[tuple[MessageInfo, frozenset[str], str]] = []
            failed: list[int] = []
            for uid in sorted(set(uids)):
                info = infos.get(uid)
                if info is None:
                    continue
                if unchanged_since is not None and info.modseq > unchanged_since:
                    failed.append(uid)
                    continue
                if mode == "set":
                    new = wanted
                elif mode == "add":
                    new = info.flags | wanted
                else:
                    new = info.flags - wanted
                if new == info.flags:
                    continue
                new = flagset(flagtext(new))
                base, _info = maildir.split_name(info.filename.split("/", 1)[1])
                filename = maildir.filename_for(base, fs.keywords.info_for(new), new=False)
                plans.append((info, new, filename))
            if not plans:
                return [], failed
            before = fs.mtimes()
            done: list[tuple[MessageInfo, frozenset[str], str]] = []
            for info, new, filename in plans:
                if filename != info.filename:
                    try:
                        os.rename(os.path.join(fs.path, info.filename), os.path.join(fs.path, filename))
                    except FileNotFoundError:
                        continue
                done.append((info, new, filename))
            # Flags are not mail: neither the renames nor the commit wait for the disk. A crash may lose a flag
            # change (the next scan reads the flags back from the file names); it never loses a message.
            modseq = fs.row.highestmodseq + 1
            changed: list[MessageInfo] = []
            with user.db.transaction(durable=False):
                for info, new, filename in done:
                    user.db.update_flags(fs.row.id, info.uid, filename, flagtext(set(new)), modseq)
                    changed.append(info._replace(flags=new, modseq=modseq, filename=filename))
                row = self._write_row(fs, before, fs.row.uidnext, modseq)
            self._after_commit(fs, row, changed)
            if changed:
                user.queue_change(fs, ChangeKind.FLAGS, [i.uid for i in changed])
            if len(done) != len(plans):
                user.scan(fs, force=True)
            return changed, failed

    # --- expunge, copy, move ------------------------------------------------------------------------------
    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        """Remove the messages flagged `\\Deleted` (only those among `uids` when given); returns their UIDs."""
        user = self._user
        with user.writing():
            fs = self._fs
            infos = user.infos(fs)
            pool = infos.values() if uids is None else [infos[u] for u in set(uids) if u in infos]
            doomed = sorted((i for i in pool if "\\Deleted" in i.flags), key=lambda i: i.uid)
            if not doomed:
                return []
            return self._remove(fs, doomed)

    def _remove(self, fs: FolderState, doomed: list[MessageInfo]) -> list[int]:
        user = self._user
        before = fs.mtimes()
        # Out of the folder at once (renamed into tmp/), deleted by the reaper's thread (`kinmail.store.reaper`)
        folder = os.fspath(fs.path)
        trash = os.path.join(folder, "tmp", maildir.EXPUNGED_PREFIX)
        gone: list[str] = []
        for info in doomed:
            path = os.path.join(folder, info.filename)
            target = trash + os.path.basename(info.filename)
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue
            except OSError:  # tmp/ missing or not writable: delete it here
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            gone.append(target)
        reaper.REAPER.add(gone)
        # Like flag changes, an expunge does not wait for the disk: a power cut may bring a message back
        # (flagged \Deleted, to be expunged again), never lose one.
        uids = [i.uid for i in doomed]
        modseq = fs.row.highestmodseq + 1
        with user.db.transaction(durable=False):
            forgotten = user.db.delete_messages(fs.row.id, uids, modseq)
            row = self._write_row(fs, before, fs.row.uidnext, modseq, stale=len(uids))
        self._after_commit(fs, row, removed=uids)
        if forgotten:
            user.note_text_work(fs.row.name)  # their full-text rows are deleted by the background indexer
        stale = row.stale_uidlist
        user.queue_change(fs, ChangeKind.EXPUNGE, uids)
        if stale > 1000 and stale > user.db.count(fs.row.id):  # counted only when it may matter
            maildir.write_uidlist(fs.path, fs.row.uidvalidity, fs.row.uidnext, user.db.uid_bases(fs.row.id))
            with user.db.transaction():
                user.db.reset_stale(fs.row.id)
            fs.row = replace(fs.row, stale_uidlist=0)
        return uids

    def _target(self, dest: Mailbox | str) -> Mailbox:
        if isinstance(dest, Mailbox):
            if dest._user is not self._user:
                raise StoreError("cannot copy between users")
            return dest
        from kinmail.store.store import open_folder

        return open_folder(self._user, dest, self.quota)

    def copy(self, uids: Iterable[int], dest: Mailbox | str) -> list[tuple[int, int]]:
        """Copy messages with their flags (hard links); returns (source UID, new UID) pairs for COPYUID."""
        return self._transfer(uids, dest, move=False)

    def move(self, uids: Iterable[int], dest: Mailbox | str) -> list[tuple[int, int]]:
        """Move messages (RFC 6851): renamed into the target, one commit per folder; returns UID pairs."""
        return self._transfer(uids, dest, move=True)

    def _transfer(self, uids: Iterable[int], dest: Mailbox | str, *, move: bool) -> list[tuple[int, int]]:
        target = self._target(dest)
        user = self._user
        with user.writing():
            src = self._fs
            dst = target._fs
            infos = user.infos(src)
            chosen = [infos[u] for u in sorted(set(uids)) if u in infos]
            if not chosen:
                return []
            if not move:
                target._check_quota(sum(i.size for i in chosen))
            placed: list[tuple[MessageInfo, str, str]] = []
            src_before, dst_before = src.mtimes(), dst.mtimes()
            for info in chosen:
                base = maildir.new_base(info.size, info.size)
                filename = maildir.filename_for(base, dst.keywords.info_for(info.flags), new=not info.flags)
                old = os.path.join(src.path, info.filename)
                try:
                    if move:
                        os.rename(old, dst.path / filename)
                    else:
                        os.link(old, dst.path / filename)
                except FileNotFoundError:
                    continue
                placed.append((info, base, filename))
            fsync_dirs(
                [folder.path / sub for folder in ((dst, src) if move else (dst,)) for sub in ("new", "cur")]
            )
            if not placed:
                user.scan(src, force=True)
                return []
            first = dst.row.uidnext
            pairs = [(info.uid, first + n) for n, (info, _b, _f) in enumerate(placed)]
            user.append_uidlist(dst, [(first + n, base) for n, (_i, base, _f) in enumerate(placed)])
            modseq = dst.row.highestmodseq + 1
            added: list[MessageInfo] = []
            with user.db.transaction():
                for (info, base, filename), (_s, uid) in zip(placed, pairs, strict=True):
                    msg_id = user.db.insert_message(
                        dst.row.id,
                        uid,
                        base,
                        filename,
                        modseq,
                        flagtext(set(info.flags)),
                        info.size,
                        info.internaldate,
                    )
                    self._copy_cached(src, info.uid, msg_id)
                    added.append(MessageInfo(uid, info.flags, modseq, info.size, info.internaldate, filename))
                dst_row = self._write_row(dst, dst_before, first + len(placed), modseq)
            self._after_commit(dst, dst_row, added)
            user.queue_change(dst, ChangeKind.APPEND, [uid for _s, uid in pairs])
            if move:
                gone = [info.uid for info, _b, _f in placed]
                src_modseq = src.row.highestmodseq + 1
                with user.db.transaction():
                    forgotten = user.db.delete_messages(src.row.id, gone, src_modseq)
                    src_row = self._write_row(src, src_before, src.row.uidnext, src_modseq, stale=len(gone))
                self._after_commit(src, src_row, removed=gone)
                if forgotten:
                    user.note_text_work(src.row.name)
                user.queue_change(src, ChangeKind.EXPUNGE, gone)
            return pairs

    def _copy_cached(self, src: FolderState, uid: int, msg_id: int) -> None:
        """The copy shares the original's cached data and full text (same bytes)."""
        db = self._user.db
        old = db.message_id(src.row.id, uid)
        if old is None:
            return
        db.conn.execute(
            "INSERT OR REPLACE INTO cache(msg, key, value) SELECT ?, key, value FROM cache WHERE msg=?",
            (msg_id, old),
        )
        row = db.conn.execute("SELECT headers, body FROM fts WHERE rowid=?", (old,)).fetchone()
        if row is not None:
            db.fts_put(msg_id, row[0], row[1])

    # --- CONDSTORE / QRESYNC ------------------------------------------------------------------------------
    def changes_since(self, modseq: int) -> tuple[list[MessageInfo], list[int]]:
        """Messages changed after `modseq` and UIDs expunged after it (RFC 7162 §3.1.4, §3.2.5)."""
        with self._user.reading():
            fs = self._fs
            if fs.row.highestmodseq <= modseq:  # every change, expunges too, raises HIGHESTMODSEQ
                return [], []
            infos = self._user.infos(fs)
            if fs.row.highestmodseq - modseq < len(infos) // 8:  # few changes: ask the MODSEQ index
                found = (infos.get(row[0]) for row in self._user.db.message_rows(fs.row.id, modseq))
                changed = [i for i in found if i is not None and i.modseq > modseq]
            else:
                changed = [i for i in infos.values() if i.modseq > modseq]
            vanished = self._user.db.vanished_since(fs.row.id, modseq)
            return changed, vanished

    # --- cache and search ---------------------------------------------------------------------------------
    def cache_get(self, uid: int, key: str) -> Any:
        """A JSON value cached for this message (envelope, bodystructure...), or None."""
        with self._user.reading():
            db = self._user.db
            msg_id = db.message_id(self._fs.row.id, uid)
            if msg_id is None:
                return None
            text = db.cache_get(msg_id, key)
        return None if text is None else json.loads(text)

    def cache_put(self, uid: int, key: str, value: Any) -> None:
        """Cache a JSON-able value for this message; dropped with the message."""
        text = json.dumps(value, separators=(",", ":"))
        with self._user.writing():
            db = self._user.db
            msg_id = db.message_id(self._fs.row.id, uid)
            if msg_id is None:
                return
            with db.transaction():
                db.cache_put(msg_id, key, text)

    def search_text(self, query: str, part: Literal["text", "body"] = "text") -> set[int]:
        """UIDs whose decoded text contains `query`, case-insensitively (SEARCH TEXT / BODY); white space in
        both is squeezed (`textindex.query_form`)."""
        query = query_form(query)
        with self._user.text_gate():
            self._index_pending()
            with self._user.reading():
                return self._user.db.fts_search(self._fs.row.id, query, part == "body")

    def _index_pending(self) -> None:
        """Fill the full-text table for the folder's messages not indexed yet (stored since the last search,
        or found by a scan or rebuild), a batch at a time so that deliveries are not held up meanwhile."""
        while self.index_batch(FTS_BATCH):
            pass

    def index_batch(self, limit: int, stop: Callable[[], bool] | None = None) -> bool:
        """Index up to `limit` messages of the folder whose text is not in the full-text table yet; the text
        is extracted outside the user's lock, then one transaction. True when there may be more. `stop`, asked
        before each message, ends the batch early (what was extracted is still committed)."""
        user = self._user
        with user.reading():
            fs = self._fs
            pending = user.db.fts_pending(fs.row.id, limit)
            path = fs.path
        if not pending:
            return False
        texts: list[tuple[int, str, str]] = []
        for msg_id, filename in pending:
            if stop is not None and texts and stop():
                break
            headers = body = ""
            for name in (filename, getattr(self.get(msg_id & UID_MASK), "filename", "")):
                try:
                    with open(os.path.join(path, name), "rb") as f:
                        headers, body = extract_text(maildir.to_crlf(f.read()))
                    break
                except (OSError, ValueError):
                    continue
            texts.append((msg_id, headers, body))
        with user.writing():
            db = user.db
            with db.transaction():
                for msg_id, headers, body in texts:
                    if db.message_id(msg_id >> UID_BITS, msg_id & UID_MASK) is None:
                        continue
                    if headers or body:
                        db.fts_put(msg_id, headers, body)
                    else:
                        db.fts_skip(msg_id)
        return len(pending) == limit or len(texts) < len(pending)
