"""One user's open store: the lock, the index connection, the folders and their in-memory message lists.

Used only inside `kinmail.store` (`Store` keeps one `UserState` per address; `UserMailboxes` and `Mailbox` work
through it). Keeps on disk, beside the index: `index_root/DOMAIN/LOCAL.lock`, locked with `flock` by every
writer so that two processes never interleave a delivery with a scan or hand out the same UID.

Concurrency model: one SQLite connection per user, shared by all threads and guarded by one re-entrant lock;
writers also hold the `flock`. When another process has committed (`PRAGMA data_version` changed), the folder
rows and the loaded message lists are brought up to date from the index by MODSEQ before anything is read
or written. Changes are queued while the lock is held and broadcast when it is released, after the commit.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kinmail.core.log import get_logger
from kinmail.store import maildir, snapshot
from kinmail.store.errors import NoSuchFolder, NotShort
from kinmail.store.index import FolderRow, UserIndex, open_index
from kinmail.store.names import INBOX, folder_dir_name, name_from_dir
from kinmail.store.types import Change, ChangeKind, MessageInfo, flagset, flagtext

log = get_logger(__name__)

RECENT_NS = 2_000_000_000
FINE_RECENT_NS = 100_000_000

_SHORT: contextvars.ContextVar[bool] = contextvars.ContextVar("short_call", default=False)


class short_call:  # lower case: used like a function, `with short_call():`
    """Mark the store calls of the block as short ones (an event loop running them itself): a folder scan that
    finds files other programs added, removed or renamed raises `NotShort` before it changes anything, rather
    than reading and indexing them there — a thousand files copied into a Maildir would stop the loop. A class,
    not a generator: it wraps every short call of the IMAP server."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _SHORT.set(True)

    def __exit__(self, *exc: object) -> None:
        _SHORT.reset(self._token)


def _same_files(listing: list[tuple[str, list[str]]], infos: dict[int, MessageInfo] | None) -> bool:
    """True when a directory listing names exactly the files of the loaded message list (nothing added,
    removed or renamed by another program): the cheap way to see that a folder scan has nothing to do."""
    if infos is None:
        return False
    names = {f"{sub}/{fname}" for sub, fnames in listing for fname in fnames if not fname.startswith(".")}
    return len(names) == len(infos) and all(info.filename in names for info in infos.values())


def settle_ns(mtimes: tuple[int, ...]) -> int:
    """How long after a directory's mtime a change within the same timestamp tick is still possible.

    Where the file system keeps whole seconds only, two seconds (what every Maildir reader assumes); where it
    keeps finer times (ext4, xfs, btrfs, tmpfs: the kernel's clock tick, a few milliseconds), 100 ms. Then a
    folder this process keeps writing to need not be listed again on each open.
    """
    if all(m % 1_000_000_000 == 0 for m in mtimes):
        return RECENT_NS
    return FINE_RECENT_NS


DEFAULT_SPECIAL_USE = {
    "Drafts": "\\Drafts",
    "Sent": "\\Sent",
    "Junk": "\\Junk",
    "Trash": "\\Trash",
    "Archive": "\\Archive",
}  # a directory changed this recently may change again within its mtime tick

Broadcast = Callable[[list[Change]], None]


class FolderState:
    """A folder of an open user: its index row, its directory, keywords, and (once asked for) its messages."""

    def __init__(self, row: FolderRow, path: Path) -> None:
        self._keywords: maildir.Keywords | None = None
        self.row = row
        self.path = path
        self.infos: dict[int, MessageInfo] | None = None
        self.cache_modseq = 0

    @property
    def keywords(self) -> maildir.Keywords:
        if self._keywords is None:
            self._keywords = maildir.Keywords(self.path)
        return self._keywords

    @property
    def path(self) -> Path:
        return self._path

    @path.setter
    def path(self, value: Path) -> None:
        self._path = value
        self._new_dir = os.path.join(value, "new")  # `mtimes` runs on every look at the folder
        self._cur_dir = os.path.join(value, "cur")
        self._keywords = None  # `dovecot-keywords` of the folder where it is now (RENAME moves it)

    def mtimes(self) -> tuple[int, int]:
        try:
            return (os.stat(self._new_dir).st_mtime_ns, os.stat(self._cur_dir).st_mtime_ns)
        except FileNotFoundError:
            return (0, 0)


class UserState:
    """Everything open for one address; see the module docstring for the locking rules."""

    def __init__(
        self,
        address: str,
        root: Path,
        index_path: Path,
        broadcast: Broadcast,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.address = address
        self.progress = progress
        self.root = root
        self.index_path = index_path
        self._broadcast = broadcast
        self.lock = threading.RLock()
        self._depth = 0
        self._flocked = False
        self._leased = False  # the `flock` kept between blocks (`held_now(on_lease=...)`, `end_lease`)
        self._no_lease_until = 0.0
        self._pending: list[Change] = []
        index_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(index_path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        self.folders: dict[int, FolderState] = {}
        self.by_name: dict[str, int] = {}
        self._root_mtime = 0
        self.fresh = False
        self.placing: set[str] = set()
        """Base names of files an append has renamed into a folder and not yet committed
        (`kinmail.store.splitappend`): a scan meanwhile leaves them to it."""
        self.stored_hook: Callable[[str, str], None] | None = None
        """Called with (address, folder) after messages were stored without their full text (`Store` points
        it at its `TextBackfill`); files found by a scan wait for the first search instead."""
        self.text_gate: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
        """Held around a full-text search (`Store` points it at `TextBackfill.paused`)."""
        with self.writing():
            conn, fresh = open_index(index_path)
            self.db = UserIndex(conn)
            self.fresh = fresh
            self._index_ino = os.stat(index_path).st_ino
            self._data_version = self.db.data_version()
            maildir.make_folder_dirs(root, subfolder=False)
            self._load_rows()
            self.sync_folder_list(force=True)
        self.progress = None

    def close(self) -> None:
        with self.lock:
            self._leased = self._flocked = False
            self.db.close()
            os.close(self._lock_fd)

    # --- locking ------------------------------------------------------------------------------------------
    def reading(self) -> _Held:
        """Hold the user's lock (threads), after catching up with what other processes committed."""
        return _Held(self, False)

    def writing(self) -> _Held:
        """Hold the user's lock and the cross-process `flock`; changes queued inside are broadcast after."""
        return _Held(self, True)

    def held_now(self, on_lease: Callable[[UserState], None] | None = None) -> _HeldNow:
        """Hold the user's lock and the `flock` for the block if both are free this instant; gives False
        (`with ... as ok`) without waiting when either is taken. For an event loop that runs a short store call
        itself rather than in a thread, but never waits for another thread or process.

        With `on_lease`, a `flock` taken here is kept after the block (a lease) and `on_lease(self)` is called,
        whose job is to call `end_lease` soon: the short calls of a busy loop then skip the `flock` pair and the
        check for other processes' commits (none can commit while the lease lasts)."""
        return _HeldNow(self, on_lease)

    def _enter_block(self, took_flock: bool) -> None:
        """A lock holder's block begins (lock held): catch up with other processes' commits when it is the
        outermost block and no lease is kept, or when it has just taken the `flock`."""
        self._depth += 1
        if (self._depth == 1 and not self._leased) or took_flock:
            self._catch_up()

    def _leave_block(self) -> list[Change]:
        """A lock holder's block ends (lock still held): the changes to broadcast once it is released."""
        self._depth -= 1
        if self._depth:
            return []
        changes, self._pending = self._pending, []
        return changes

    def end_lease(self, gap: float) -> bool:
        """Give back a leased `flock` (`held_now`), and take no new lease for `gap` seconds, so that a process
        waiting for the lock gets its turn. False when the user's lock is taken this instant (try again)."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            if self._leased and self._depth == 0:
                self._leased = self._flocked = False
                self._no_lease_until = time.monotonic() + gap
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            return True
        finally:
            self.lock.release()

    def queue_change(self, fs: FolderState, kind: ChangeKind, uids: list[int] | tuple[int, ...]) -> None:
        """Queue a Change to broadcast once the lock is released (call only after the commit)."""
        self._pending.append(Change(self.address, fs.row.name, kind, tuple(uids), fs.row.highestmodseq))

    def queue_folders_change(self, name: str) -> None:
        self._pending.append(Change(self.address, name, ChangeKind.FOLDERS, (), 0))

    def note_text_work(self, folder: str) -> None:
        """Tell the background indexer (`stored_hook`) that `folder` has messages to index or full-text rows
        of gone messages to delete."""
        if self.stored_hook is not None:
            self.stored_hook(self.address, folder)

    @property
    def data_version_seen(self) -> int:
        """`PRAGMA data_version` as the last catch-up read it: the current value while the `flock` is held (no
        other process can commit then, and this connection's own commits do not change it)."""
        return self._data_version

    def _catch_up(self) -> None:
        if not hasattr(self, "db"):
            return
        try:
            ino = os.stat(self.index_path).st_ino
        except FileNotFoundError:
            ino = -1
        if ino != self._index_ino:
            self.reopen()
            return
        version = self.db.data_version()
        if version == self._data_version:
            return
        self._data_version = version
        self._load_rows()

    def reopen(self) -> None:
        """The index file was replaced (`kinmail index rebuild`) or removed: open it again from scratch."""
        took = not self._flocked
        if took:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._flocked = True
        try:
            log.info("store.index_reopen", user=self.address)
            self.db.close()
            conn, fresh = open_index(self.index_path)
            self.db = UserIndex(conn)
            self._index_ino = os.stat(self.index_path).st_ino
            self._data_version = self.db.data_version()
            self.folders, self.by_name = {}, {}
            self._load_rows()
            if fresh:
                self.sync_folder_list(force=True)
        finally:
            if took:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                self._flocked = False

    def _load_rows(self) -> None:
        """Bring folder rows and loaded message lists up to date with the index."""
        seen: set[int] = set()
        self.by_name = {}
        for row in self.db.folders():
            seen.add(row.id)
            self.by_name[row.name] = row.id
            fs = self.folders.get(row.id)
            if (
                fs is None
                or fs.row.uidvalidity != row.uidvalidity
                or fs.row.highestmodseq > row.highestmodseq
            ):
                self.folders[row.id] = FolderState(row, self.folder_path(row.name))
                continue
            if fs.row.name != row.name:
                fs.path = self.folder_path(row.name)
            fs.row = row
            if fs.infos is not None and fs.cache_modseq < row.highestmodseq:
                self._apply_changes(fs)
        for folder_id in list(self.folders):
            if folder_id not in seen:
                del self.folders[folder_id]

    def _apply_changes(self, fs: FolderState) -> int:
        """Bring a loaded message list up to the folder's HIGHESTMODSEQ; returns how many rows changed.

        New UIDs are always above every loaded one, so adding them at the end keeps the dict in UID order.
        """
        assert fs.infos is not None
        infos = fs.infos
        vanished = self.db.vanished_since(fs.row.id, fs.cache_modseq)
        for uid in vanished:
            infos.pop(uid, None)
        top = next(reversed(infos), 0)
        rows = self.db.message_rows(fs.row.id, fs.cache_modseq)
        out_of_order = False
        for uid, flags, modseq, size, internaldate, filename in rows:
            if uid < top and uid not in infos:
                out_of_order = True
            infos[uid] = MessageInfo(uid, flagset(flags), modseq, size, internaldate, filename)
        if out_of_order:
            fs.infos = dict(sorted(infos.items()))
        fs.cache_modseq = fs.row.highestmodseq
        return len(vanished) + len(rows)

    # --- folders ------------------------------------------------------------------------------------------
    def folder_path(self, name: str) -> Path:
        return self.root / folder_dir_name(name) if name != INBOX else self.root

    def folder(self, name: str) -> FolderState:
        folder_id = self.by_name.get(name)
        if folder_id is None:
            raise NoSuchFolder(f"no folder {name!r}")
        return self.folders[folder_id]

    def folder_by_id(self, folder_id: int) -> FolderState:
        fs = self.folders.get(folder_id)
        if fs is None:
            raise NoSuchFolder("the folder was deleted")
        return fs

    def infos(self, fs: FolderState) -> dict[int, MessageInfo]:
        """The folder's messages by UID, in UID order, loaded once and then kept up to date."""
        if fs.infos is None:
            stored = self.db.snapshot_get(fs.row.id)
            loaded = (
                snapshot.decode(stored[1])
                if stored is not None and stored[0] <= fs.row.highestmodseq
                else None
            )
            if loaded is not None and stored is not None:
                fs.infos, fs.cache_modseq = loaded, stored[0]
                changed = self._apply_changes(fs)
            else:
                new = tuple.__new__  # the NamedTuple constructor without its Python-level wrapper: 5× faster
                with snapshot.no_gc():
                    fs.infos = {
                        r[0]: new(MessageInfo, (r[0], flagset(r[1]), r[2], r[3], r[4], r[5]))
                        for r in self.db.message_rows(fs.row.id)
                    }
                fs.cache_modseq = fs.row.highestmodseq
                changed = snapshot.MAX_DELTA + 1
            if len(fs.infos) >= snapshot.MIN_MESSAGES and changed > snapshot.MAX_DELTA:
                with self.db.transaction():
                    self.db.snapshot_put(fs.row.id, fs.cache_modseq, snapshot.encode(fs.infos))
        return fs.infos

    def reload_row(self, fs: FolderState) -> None:
        row = self.db.folder_by_id(fs.row.id)
        if row is not None:
            fs.row = row

    def sync_folder_list(self, force: bool = False) -> bool:
        """Match the index's folders with the directories on disk (folders made or removed by others)."""
        try:
            mtime = os.stat(self.root).st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        if not force and mtime == self._root_mtime and time.time_ns() - mtime > RECENT_NS:
            return False
        with self.writing():
            self._root_mtime = mtime
            on_disk: dict[str, Path] = {INBOX: self.root}
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if not entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                        continue
                    name = name_from_dir(entry.name)
                    if name is None or name == INBOX:
                        if entry.name not in (".", ".."):
                            log.debug("store.folder_ignored", user=self.address, dir=entry.name)
                        continue
                    if not os.path.isdir(os.path.join(entry.path, "cur")):
                        continue
                    on_disk[name] = Path(entry.path)
            changed = False
            for name, folder_id in list(self.by_name.items()):
                if name not in on_disk:
                    with self.db.transaction():
                        self.db.delete_folder(folder_id)
                    self.folders.pop(folder_id, None)
                    del self.by_name[name]
                    self.queue_folders_change(name)
                    changed = True
            for name, path in sorted(on_disk.items()):
                if name not in self.by_name:
                    self.add_folder_from_disk(name, path)
                    changed = True
            return changed

    def add_folder_from_disk(self, name: str, path: Path, special_use: str | None = None) -> FolderState:
        """Index a folder directory: UIDVALIDITY and UIDs from `dovecot-uidlist` when there is one.

        One transaction for the folder and its messages; a new `dovecot-uidlist` is written before the commit.
        """
        uidlist = maildir.read_uidlist(path)
        special = special_use or maildir.read_special_use(path) or DEFAULT_SPECIAL_USE.get(name)
        fs: FolderState | None = None
        try:
            with self.db.transaction():
                if uidlist is not None:
                    row = self.db.add_folder(name, uidlist.uidvalidity, uidlist.nextuid, special)
                    # MODSEQs given out before the index was lost were counters far below this, so CONDSTORE
                    # clients see every message as changed rather than miss a change (RFC 7162 §3.1.1).
                    self.db.set_counters(row.id, row.uidnext, int(time.time()))
                    row = self.db.folder(name) or row
                else:
                    row = self.db.add_folder(name, self.db.new_uidvalidity(), 1, special)
                    maildir.write_uidlist(path, row.uidvalidity, row.uidnext, [])
                fs = FolderState(row, path)
                self.folders[row.id] = fs
                self.by_name[name] = row.id
                self.scan(fs, force=True, uidlist=uidlist, rebuilding=True, progress=self.progress)
        except BaseException:
            if fs is not None:
                self.folders.pop(fs.row.id, None)
                self.by_name.pop(name, None)
            raise
        self.queue_folders_change(name)
        return fs

    def append_uidlist(self, fs: FolderState, entries: list[tuple[int, str]]) -> None:
        """Record new UIDs in `dovecot-uidlist` before the index commits them; a list someone removed is
        written again whole first, so that its UIDVALIDITY and UIDs are never lost."""
        try:
            maildir.append_uidlist(fs.path, entries, create=False)
        except FileNotFoundError:
            log.warning("store.uidlist_missing", user=self.address, folder=fs.row.name)
            maildir.write_uidlist(fs.path, fs.row.uidvalidity, fs.row.uidnext, self.db.uid_bases(fs.row.id))
            maildir.append_uidlist(fs.path, entries)

    # --- scanning the Maildir -----------------------------------------------------------------------------
    def scan(
        self,
        fs: FolderState,
        *,
        force: bool = False,
        uidlist: maildir.UidList | None = None,
        rebuilding: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> bool:
        """Pick up files other programs added, renamed (flags) or removed; directory mtimes first.

        Returns True when the index changed. New files keep the UID `dovecot-uidlist` gives them when that
        UID is still free (always on a rebuild; otherwise only at or above UIDNEXT, so no UID is reused).
        """
        mtimes = fs.mtimes()
        row = fs.row
        if not force and mtimes == (row.new_mtime, row.cur_mtime):
            # Unchanged since the last look. A change within the same timestamp tick as the last one seen
            # (often our own write) leaves the mtime as it was: the first look once that tick has surely
            # passed lists the folder; a look before then learns nothing a look a moment later would not.
            settle = settle_ns(mtimes)
            newest = max(mtimes)
            if row.scanned_at - newest > settle or time.time_ns() - newest <= settle:
                return False
        with self.writing():
            scanned_at = time.time_ns()
            mtimes = fs.mtimes()
            listing: list[tuple[str, list[str]]] = []
            for sub in ("new", "cur"):
                try:
                    listing.append((sub, os.listdir(fs.path / sub)))
                except FileNotFoundError:
                    listing.append((sub, []))
            on_disk: dict[str, tuple[str, str]] = {}
            indexed: dict[str, tuple[int, str, str]] = {}
            added: list[str] = []
            removed: list[int] = []
            renamed: list[tuple[int, str, str]] = []
            if uidlist is not None or rebuilding or not _same_files(listing, fs.infos):
                for sub, names in listing:
                    for fname in names:
                        if fname.startswith("."):
                            continue
                        base, info = maildir.split_name(fname)
                        if sub == "new" and base in on_disk:
                            continue
                        on_disk[base] = (f"{sub}/{fname}", info if sub == "cur" else "")
                indexed = self.db.file_rows(row.id)
                added = [base for base in on_disk if base not in indexed and base not in self.placing]
                removed = sorted(uid for base, (uid, _f, _fl) in indexed.items() if base not in on_disk)
                keywords = fs.keywords
                keywords.load()
                for base, (uid, filename, flags) in indexed.items():
                    disk = on_disk.get(base)
                    if disk is not None and disk[0] != filename:
                        new_flags = set(keywords.flags_from_info(disk[1]))
                        # keywords beyond the 26 letters live only in the index: keep them
                        new_flags |= {
                            f
                            for f in flagset(flags)
                            if not f.startswith("\\")
                            and keywords.letter(f, create=False) is None
                            and f != "$Forwarded"
                        }
                        renamed.append((uid, disk[0], flagtext(new_flags)))
            if (added or removed or renamed) and _SHORT.get():
                raise NotShort(
                    f"{row.name}: {len(added)} added, {len(removed)} removed, {len(renamed)} renamed"
                )
            if not added and not removed and not renamed:
                recent = settle_ns(mtimes)
                settled = scanned_at - max(mtimes) > recent
                if mtimes != (row.new_mtime, row.cur_mtime) or (
                    settled and row.scanned_at - max(mtimes) <= recent
                ):
                    with self.db.transaction(durable=False):  # only when the folder was last looked at
                        self.db.set_scan(row.id, mtimes[0], mtimes[1], scanned_at)
                    self.reload_row(fs)
                else:
                    fs.row.scanned_at = scanned_at  # no commit for a clean scan of a recently changed folder
                return False
            new_entries = self._place_new(fs, added, on_disk, indexed, uidlist, rebuilding)
            modseq = row.highestmodseq + 1
            uidnext = max([row.uidnext] + [uid + 1 for uid, *_ in new_entries])
            if new_entries:
                self.append_uidlist(fs, [(uid, base) for uid, base, *_ in new_entries])
            with self.db.transaction():
                done = 0
                for uid, base, filename, flags, size, internaldate in new_entries:
                    self.db.insert_message(row.id, uid, base, filename, modseq, flags, size, internaldate)
                    done += 1
                    if progress is not None and done % 1000 == 0:
                        progress(1000)
                if progress is not None:
                    progress(done % 1000)
                for uid, filename, flags in renamed:
                    self.db.update_flags(row.id, uid, filename, flags, modseq)
                forgotten = self.db.delete_messages(row.id, removed, modseq)
                self.db.set_counters(row.id, uidnext, modseq)
                self.db.set_scan(row.id, mtimes[0], mtimes[1], scanned_at)
            self.reload_row(fs)
            if fs.infos is not None:
                self._apply_changes(fs)
            if new_entries:
                self.queue_change(fs, ChangeKind.APPEND, sorted(uid for uid, *_ in new_entries))
            if renamed:
                self.queue_change(fs, ChangeKind.FLAGS, sorted(uid for uid, *_ in renamed))
            if removed:
                self.queue_change(fs, ChangeKind.EXPUNGE, removed)
            if forgotten:  # the indexer deletes their full-text rows
                self.note_text_work(fs.row.name)
            log.info(
                "store.scan",
                user=self.address,
                folder=row.name,
                added=len(new_entries),
                flags=len(renamed),
                removed=len(removed),
            )
            return True

    def _place_new(
        self,
        fs: FolderState,
        added: list[str],
        on_disk: dict[str, tuple[str, str]],
        indexed: dict[str, tuple[int, str, str]],
        uidlist: maildir.UidList | None,
        rebuilding: bool,
    ) -> list[tuple[int, str, str, str, int, float]]:
        """UIDs, flags, sizes and dates for files not yet in the index."""
        if not added:
            return []
        if uidlist is None:
            uidlist = maildir.read_uidlist(fs.path)
        known = uidlist.uids if uidlist is not None else {}
        used = {uid for uid, _f, _fl in indexed.values()}
        floor = 1 if rebuilding else fs.row.uidnext
        entries: list[tuple[int | None, float, str, str, str, int]] = []
        for base in added:
            filename, info = on_disk[base]
            path = fs.path / filename
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            size, vsize = maildir.sizes_from_base(base)
            if vsize is None or (size is not None and size != st.st_size):
                try:
                    vsize = maildir.crlf_size(path)
                except FileNotFoundError:
                    continue
            flags = flagtext(set(fs.keywords.flags_from_info(info)))
            uid = known.get(base)
            if uid is not None and (uid < floor or uid in used):
                uid = None
            if uid is not None:
                used.add(uid)
            entries.append((uid, st.st_mtime, base, filename, flags, vsize))
        entries.sort(key=lambda e: (e[0] is None, e[0] or 0, e[1], e[2]))
        nextuid = max(fs.row.uidnext, max(used, default=0) + 1)
        result: list[tuple[int, str, str, str, int, float]] = []
        for uid, mtime, base, filename, flags, vsize in entries:
            if uid is None:
                uid = nextuid
                nextuid += 1
            result.append((uid, base, filename, flags, vsize, mtime))
        result.sort()
        return result


# The two lock holders are classes rather than `contextlib.contextmanager` generators: every store call goes
# through two or three of them, and a generator-based one costs several times as much to enter and leave.


class _Held:
    """`UserState.reading` / `writing`: the user's lock (and for writing the `flock`) for one block."""

    __slots__ = ("_state", "_took_flock", "_write")

    def __init__(self, state: UserState, write: bool) -> None:
        self._state = state
        self._write = write
        self._took_flock = False

    def __enter__(self) -> None:
        state = self._state
        state.lock.acquire()
        try:
            if self._write and not state._flocked:
                fcntl.flock(state._lock_fd, fcntl.LOCK_EX)
                state._flocked = self._took_flock = True
        except BaseException:
            state.lock.release()
            raise
        try:
            state._enter_block(self._took_flock)
        except BaseException:
            self._release()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        changes = self._release()
        # what a failed block queued is not told (as before: the caller sees the error, views their next sync)
        if changes and exc_type is None:
            self._state._broadcast(changes)

    def _release(self) -> list[Change]:
        state = self._state
        try:
            if self._took_flock:
                fcntl.flock(state._lock_fd, fcntl.LOCK_UN)
                state._flocked = False
            return state._leave_block()
        finally:
            state.lock.release()


class _HeldNow:
    """`UserState.held_now`: the lock and the `flock` if both are free this instant, else False at once."""

    __slots__ = ("_entered", "_on_lease", "_state", "_took_flock")

    def __init__(self, state: UserState, on_lease: Callable[[UserState], None] | None) -> None:
        self._state = state
        self._on_lease = on_lease
        self._took_flock = False
        self._entered = False

    def __enter__(self) -> bool:
        state = self._state
        if not state.lock.acquire(blocking=False):
            return False
        if not state._flocked:
            try:
                fcntl.flock(state._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                state.lock.release()
                return False
            except BaseException:
                state.lock.release()
                raise
            state._flocked = self._took_flock = True
        # One catch-up for the whole block: with the `flock` held no other process can commit, so the store
        # calls inside need not check again each (a `stat` and a query each time).
        self._entered = True
        try:
            state._enter_block(self._took_flock)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return True

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        if not self._entered:
            return
        self._entered = False
        state = self._state
        leased = False
        changes = state._leave_block()
        try:
            if self._took_flock:
                if self._on_lease is not None and time.monotonic() >= state._no_lease_until:
                    state._leased = leased = True
                else:
                    fcntl.flock(state._lock_fd, fcntl.LOCK_UN)
                    state._flocked = False
        finally:
            state.lock.release()
            # also when the block raised: a lease must always be given back, and what committed be told
            if leased and self._on_lease is not None:
                self._on_lease(state)
            if changes:
                state._broadcast(changes)
