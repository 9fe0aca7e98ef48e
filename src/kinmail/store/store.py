"""`Store` and `UserMailboxes`: the entry points to every user's mail; the only code that writes mailboxes.

`Runtime` builds one `Store(mail_root, index_root)`; delivery, IMAP, POP3, webmail and the CLI call
`store.mailboxes(address)`. On disk: the Maildir++ at `mail_root/DOMAIN/LOCAL/` (INBOX at the root, folders as
`.Name`, `subscriptions` as Dovecot keeps it) and the index at `index_root/DOMAIN/LOCAL.sqlite` (see
`kinmail.store.index`). Each user is opened once per `Store` and shared by all threads; listeners registered
with `subscribe` get a `Change` after each commit, called from the writing thread. New mail's full text is
indexed in the background by the store's `TextBackfill` thread (`kinmail.store.backfill`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from kinmail.core.atomic import atomic_write, fsync_dir
from kinmail.core.log import get_logger
from kinmail.store import maildir, reaper, snapshot
from kinmail.store.backfill import TextBackfill
from kinmail.store.checkpoint import Checkpointer
from kinmail.store.errors import FolderExists, InvalidFolderName, NoSuchFolder, StoreError
from kinmail.store.mailbox import Mailbox
from kinmail.store.names import DELIMITER, INBOX, check_name, decode_mutf7, storage_name
from kinmail.store.types import Change, FolderInfo
from kinmail.store.user import DEFAULT_SPECIAL_USE, UserState

log = get_logger(__name__)

SPECIAL_FOLDERS = DEFAULT_SPECIAL_USE
SPECIAL_USES = frozenset({*SPECIAL_FOLDERS.values(), "\\All", "\\Flagged"})
SUBSCRIPTIONS = "subscriptions"
BACKFILL_BATCH = 200
PURGE_BATCH = 32  # a full-text row takes about 1.5 ms to delete: 50 ms holding the user's lock

Listener = Callable[[Change], None]


def _split_address(address: str) -> tuple[str, str]:
    local, at, domain = address.strip().lower().rpartition("@")
    for part in (local, domain):
        if (
            not at
            or not part
            or part.startswith(".")
            or "/" in part
            or "\\" in part
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in part)
            or len(part) > 255
        ):
            raise StoreError(f"not a mailbox address: {address!r}")
    return local, domain


def open_folder(user: UserState, name: str, quota: int | None = None, *, scan: bool = True) -> Mailbox:
    """Open folder `name` of an open user (raises NoSuchFolder / InvalidFolderName); `scan` picks up files
    other programs changed (two `stat`s when nothing did)."""
    name = check_name(name)
    with user.reading():
        if name not in user.by_name:
            user.sync_folder_list()
        fs = user.folder(name)
        if scan:
            user.scan(fs)
        return Mailbox(user, fs.row.id, quota)


class Store:
    """All users' Maildirs and indexes. Thread-safe; one per process."""

    def __init__(self, mail_root: Path, index_root: Path) -> None:
        self.mail_root = Path(mail_root)
        self.index_root = Path(index_root)
        self._users: dict[str, UserState] = {}
        self._opening: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Listener]] = {}
        self._listeners_lock = threading.Lock()
        self.quota_for: Callable[[str], int | None] | None = None
        """When set (by the runtime): the quota in bytes of an address, or None for no limit."""
        self.backfill = TextBackfill(self._index_text)
        self.checkpointer = Checkpointer(self._open_users)

    def _user(self, address: str) -> UserState:
        """The open state of a user, opening it (and building its index if need be) on first use. A slow
        first open of one user (an index rebuild) does not hold up the others."""
        local, domain = _split_address(address)
        key = f"{local}@{domain}"
        with self._lock:
            user = self._users.get(key)
            if user is not None:
                return user
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:
            with self._lock:
                user = self._users.get(key)
            if user is not None:
                return user
            user = UserState(
                key,
                self.mail_root / domain / local,
                self.index_root / domain / f"{local}.sqlite",
                self._broadcast,
            )
            user.stored_hook = self.backfill.note
            user.text_gate = self.backfill.paused
            _ensure_special_folders(user)
            with user.reading():
                paths = [fs.path for fs in user.folders.values()]
            for path in paths:
                maildir.clean_tmp(path)
            with self._lock:
                self._users[key] = user
                self._opening.pop(key, None)
            self.checkpointer.start()
        _prewarm(user)
        return user

    def mailboxes(self, address: str) -> UserMailboxes:
        """The folders of `address`; the Maildir, index and special folders are made on first use."""
        user = self._user(address)
        quota = self.quota_for(user.address) if self.quota_for is not None else None
        return UserMailboxes(user, quota)

    def mailboxes_if_open(self, address: str) -> UserMailboxes | None:
        """Like `mailboxes`, but only for a user this store has open already (None otherwise): never touches
        the disk, so an event loop may call it directly (IMAP and POP3 logins of a user seen before)."""
        key = "{}@{}".format(*_split_address(address))
        with self._lock:
            user = self._users.get(key)
        if user is None:
            return None
        quota = self.quota_for(user.address) if self.quota_for is not None else None
        return UserMailboxes(user, quota)

    def subscribe(self, address: str, listener: Listener) -> Callable[[], None]:
        """Call `listener(change)` after each commit to `address`'s mail; returns the function that stops it."""
        key = "{}@{}".format(*_split_address(address))
        with self._listeners_lock:
            self._listeners.setdefault(key, []).append(listener)

        def unsubscribe() -> None:
            with self._listeners_lock:
                listeners = self._listeners.get(key, [])
                if listener in listeners:
                    listeners.remove(listener)

        return unsubscribe

    def _broadcast(self, changes: list[Change]) -> None:
        for change in changes:
            with self._listeners_lock:
                listeners = list(self._listeners.get(change.address, ()))
            for listener in listeners:
                try:
                    listener(change)
                except Exception:
                    log.exception("store.listener_failed", user=change.address, kind=change.kind)

    def _index_text(self, address: str, folder: str) -> bool:
        """One batch of the background full-text indexing (`TextBackfill`), for a user still open."""
        with self._lock:
            user = self._users.get(address)
        if user is None:
            return False
        more = _purge_text(user)
        try:
            box = open_folder(user, folder, scan=False)
        except NoSuchFolder:  # deleted: only its full-text rows were left to delete
            return more
        return box.index_batch(BACKFILL_BATCH, stop=self.backfill.held_back) or more

    def _open_users(self) -> list[UserState]:
        with self._lock:
            return list(self._users.values())

    def close(self) -> None:
        reaper.REAPER.drain()  # expunged messages' files not yet deleted
        self.backfill.close()
        self.checkpointer.close()
        with self._lock:
            for user in self._users.values():
                user.close()
            self._users.clear()

    def rebuild(self, address: str, progress: Callable[[int], None] | None = None) -> int:
        """Drop `address`'s index and build it again from the Maildir, under the user's lock; returns the
        number of messages. Open mailboxes stay usable; other processes reopen the new file by themselves."""
        local, domain = _split_address(address)
        index_path = self.index_root / domain / f"{local}.sqlite"
        user = self._user(address)
        with user.writing():
            user.progress = progress
            try:
                _remove_index(index_path)
                user.reopen()
            finally:
                user.progress = None
            # big folders get their snapshot now, not at the next SELECT
            for fs in list(user.folders.values()):
                if user.db.count(fs.row.id) >= snapshot.MIN_MESSAGES:
                    user.infos(fs)
        _ensure_special_folders(user)
        with user.reading():
            return user.db.usage()[1]

    def users_on_disk(self) -> list[str]:
        """Addresses that have a Maildir under `mail_root`."""
        found: list[str] = []
        if not self.mail_root.is_dir():
            return found
        for domain in sorted(os.listdir(self.mail_root)):
            ddir = self.mail_root / domain
            if domain.startswith(".") or not ddir.is_dir():
                continue
            for local in sorted(os.listdir(ddir)):
                if not local.startswith(".") and (ddir / local / "cur").is_dir():
                    found.append(f"{local}@{domain}")
        return found


def _purge_text(user: UserState) -> bool:
    """Delete a batch of the full-text rows that expunged messages and deleted folders left (see
    `UserIndex._fts_forget`); True when more are left."""
    with user.reading():
        if not user.db.fts_dead_any():
            return False
    with user.writing(), user.db.transaction(durable=False):
        return user.db.fts_purge(PURGE_BATCH)


def _prewarm(user: UserState) -> None:
    """Load a big INBOX's message list in the background when a user is first opened (at login), so that the
    SELECT that usually follows finds it in memory."""
    with user.reading():
        folder_id = user.by_name.get(INBOX)
        if folder_id is None or not user.db.has_snapshot(folder_id):
            return

    def warm() -> None:
        try:
            with user.reading():
                fs = user.folders.get(folder_id)
                if fs is not None:
                    user.infos(fs)
        except Exception as exc:  # the store may have been closed meanwhile
            log.debug("store.prewarm_failed", user=user.address, reason=str(exc))

    threading.Thread(target=warm, name="store-prewarm", daemon=True).start()


def _remove_index(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _ensure_special_folders(user: UserState) -> None:
    """Create Drafts, Sent, Junk, Trash and Archive (subscribed) unless a folder already has that use."""
    mailboxes = UserMailboxes(user, None)
    with user.writing():
        subscribe = [] if (user.root / SUBSCRIPTIONS).exists() else [INBOX]
        uses = {fs.row.special_use for fs in user.folders.values()}
        for name, use in SPECIAL_FOLDERS.items():
            if use in uses:
                continue
            if name in user.by_name:
                mailboxes.set_special_use(name, use)
                continue
            mailboxes.create_folder(name, special_use=use)
            subscribe.append(name)
        if subscribe:
            mailboxes._set_subscriptions(subscribe, True)


class UserMailboxes:
    """One user's folders: list, create, delete, rename, subscribe, open; quota; delivery."""

    def __init__(self, user: UserState, quota: int | None) -> None:
        self._user = user
        self.quota = quota
        """The user's quota in bytes (None: no limit), checked by deliver, append and copy."""

    @property
    def address(self) -> str:
        return self._user.address

    @property
    def root(self) -> Path:
        """The user's Maildir (for backups and tests; write only through this API)."""
        return self._user.root

    def folders(self) -> list[FolderInfo]:
        """Every folder, INBOX first, then by name; `name` in UTF-8 with `/` as delimiter."""
        user = self._user
        user.sync_folder_list()
        subscribed = self._subscriptions()
        with user.reading():
            rows = sorted((fs.row for fs in user.folders.values()), key=lambda r: (r.name != INBOX, r.name))
            return [FolderInfo(r.name, r.special_use, r.name in subscribed) for r in rows]

    def open(self, name: str, *, scan: bool = True) -> Mailbox:
        """Open a folder (raises NoSuchFolder, InvalidFolderName). Without `scan`, files other programs
        changed are not looked for (APPEND and COPY only add messages, and need not know of them)."""
        return open_folder(self._user, name, self.quota, scan=scan)

    def held_now(
        self, on_lease: Callable[[UserState], None] | None = None
    ) -> contextlib.AbstractContextManager[bool]:
        """The user's lock, if free this instant (see `Mailbox.held_now`)."""
        return self._user.held_now(on_lease)

    def known(self, name: str) -> bool:
        """Whether `name` is in the folder list already loaded, without the lock or the disk (an event loop
        may call it): a hint for callers that open the folder afterwards anyway."""
        try:
            return check_name(name) in self._user.by_name
        except InvalidFolderName:
            return False

    def loaded_count(self, name: str) -> int | None:
        """How many messages folder `name` holds in memory; None when its list is not loaded or the name is
        unknown. No lock, no disk (an event loop may call it)."""
        user = self._user
        try:
            folder_id = user.by_name.get(check_name(name))
        except InvalidFolderName:
            return None
        fs = user.folders.get(folder_id) if folder_id is not None else None
        infos = fs.infos if fs is not None else None
        return None if infos is None else len(infos)

    def exists(self, name: str) -> bool:
        try:
            name = check_name(name)
        except InvalidFolderName:
            return False
        with self._user.reading():
            return name in self._user.by_name

    def create_folder(self, name: str, special_use: str | None = None) -> None:
        """Create a folder (RFC 9051 §6.3.4; SPECIAL-USE per RFC 6154 §3). Parents are not created."""
        name = check_name(name)
        if special_use is not None and special_use not in SPECIAL_USES:
            raise StoreError(f"unknown special use {special_use}")
        user = self._user
        with user.writing():
            user.sync_folder_list()
            if name in user.by_name:
                raise FolderExists(f"folder {name!r} exists")
            path = user.folder_path(name)
            if path.exists():
                raise FolderExists(f"folder {name!r} exists")
            maildir.make_folder_dirs(path, subfolder=True, sync=False)
            maildir.write_special_use(path, special_use)
            user.add_folder_from_disk(name, path, special_use)  # its dovecot-uidlist write fsyncs `path`
            fsync_dir(user.root)
        log.info("store.folder_created", user=user.address, folder=name)

    def set_special_use(self, name: str, special_use: str | None) -> None:
        name = check_name(name)
        if special_use is not None and special_use not in SPECIAL_USES:
            raise StoreError(f"unknown special use {special_use}")
        user = self._user
        with user.writing():
            fs = user.folder(name)
            maildir.write_special_use(fs.path, special_use)
            with user.db.transaction():
                user.db.set_special_use(fs.row.id, special_use)
            user.reload_row(fs)
            user.queue_folders_change(name)

    def delete_folder(self, name: str) -> None:
        """Delete a folder and its messages; its sub-folders stay (RFC 9051 §6.3.5) and so does its
        subscription (RFC 9051 §6.3.9). INBOX cannot go."""
        name = check_name(name)
        if name == INBOX:
            raise StoreError("INBOX cannot be deleted")
        user = self._user
        with user.writing():
            fs = user.folder(name)
            doomed = fs.path.with_name(f"{fs.path.name}.deleting")
            os.rename(fs.path, doomed)
            fsync_dir(user.root)
            with user.db.transaction():
                user.db.delete_folder(fs.row.id)
            user.folders.pop(fs.row.id, None)
            user.by_name.pop(name, None)
            shutil.rmtree(doomed, ignore_errors=True)
            user.note_text_work(name)  # its full-text rows are deleted by the background indexer
            # The subscription outlives the folder (RFC 9051 §6.3.9): LSUB and LIST (SUBSCRIBED) still show it.
            user.queue_folders_change(name)
        log.info("store.folder_deleted", user=user.address, folder=name)

    def rename_folder(self, old: str, new: str) -> None:
        """Rename a folder and its sub-folders, keeping UIDVALIDITY (RFC 9051 §6.3.6).

        Renaming INBOX moves all its messages into the new folder and leaves INBOX empty.
        """
        old, new = check_name(old), check_name(new)
        user = self._user
        with user.writing():
            if old not in user.by_name:
                raise NoSuchFolder(f"no folder {old!r}")
            if new in user.by_name or user.folder_path(new).exists():
                raise FolderExists(f"folder {new!r} exists")
            if new == INBOX or new.startswith(old + DELIMITER):
                raise InvalidFolderName(f"cannot rename {old!r} to {new!r}")
            if old == INBOX:
                self.create_folder(new)
                inbox = self.open(INBOX)
                inbox.move(inbox.uids(), self.open(new))
                return
            moves = [
                (n, new + n[len(old) :])
                for n in sorted(user.by_name)
                if n == old or n.startswith(old + DELIMITER)
            ]
            for _src, dst in moves:
                if user.folder_path(dst).exists():
                    raise FolderExists(f"folder {dst!r} exists")
            subscribed = self._subscriptions()
            for src, dst in moves:
                fs = user.folder(src)
                dst_path = user.folder_path(dst)
                os.rename(fs.path, dst_path)
                with user.db.transaction():
                    user.db.rename_folder(fs.row.id, dst)
                del user.by_name[src]
                user.by_name[dst] = fs.row.id
                fs.path = dst_path
                user.reload_row(fs)
                if src in subscribed:
                    self._set_subscription(src, False)
                    self._set_subscription(dst, True)
                user.queue_folders_change(dst)
            fsync_dir(user.root)
        log.info("store.folder_renamed", user=user.address, old=old, new=new)

    # --- subscriptions (Dovecot's `subscriptions` file) ---------------------------------------------------
    def set_subscribed(self, name: str, on: bool) -> None:
        """SUBSCRIBE / UNSUBSCRIBE (the folder need not exist, RFC 9051 §6.3.7)."""
        name = check_name(name)
        with self._user.writing():
            self._set_subscription(name, on)

    def subscriptions(self) -> set[str]:
        """Subscribed names, including those of folders that do not exist (RFC 9051 §6.3.7)."""
        with self._user.reading():
            return self._subscriptions()

    def _subscriptions(self) -> set[str]:
        try:
            text = (self._user.root / SUBSCRIPTIONS).read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return set()
        lines = text.split("\n")
        v2 = lines[0].startswith("V\t")
        names: set[str] = set()
        for line in lines[1:] if v2 else lines:
            if not line:
                continue
            parts = line.split("\t") if v2 else line.split(".")
            try:
                decoded = DELIMITER.join(decode_mutf7(p) if not v2 else p for p in parts)
                names.add(check_name(decoded))
            except InvalidFolderName:
                continue
        return names

    def _set_subscription(self, name: str, on: bool) -> None:
        self._set_subscriptions([name], on)

    def _set_subscriptions(self, changed: list[str], on: bool) -> None:
        names = self._subscriptions()
        if all((name in names) == on for name in changed):
            return
        if on:
            names.update(changed)
        else:
            names.difference_update(changed)
        text = "".join(f"{storage_name(n)}\n" for n in sorted(names))
        atomic_write(self._user.root / SUBSCRIPTIONS, text, mode=0o600)

    # --- messages -----------------------------------------------------------------------------------------
    def deliver(self, folder: str, data: bytes, flags: Iterable[str] = (), *, create: bool = False) -> int:
        """Store a message in `folder` (INBOX if it is empty); durable before it returns; returns its UID.

        With `create`, a missing folder is created first (Sieve `fileinto :create`); otherwise NoSuchFolder.
        """
        name = folder or INBOX
        if create and not self.exists(name):
            try:
                self.create_folder(name)
            except FolderExists:
                pass
        return open_folder(self._user, name, self.quota, scan=False).append(data, flags)

    def deliver_many(self, folder: str, messages: Sequence[bytes], flags: Iterable[str] = ()) -> list[int]:
        """Store several messages in `folder` (INBOX if empty) with one group commit (`Mailbox.append_many`):
        all of them durable before it returns, or none indexed; returns their UIDs."""
        return open_folder(self._user, folder or INBOX, self.quota, scan=False).append_many(messages, flags)

    def quota_usage(self) -> tuple[int, int]:
        """(bytes, messages) over all folders, from the index."""
        with self._user.reading():
            return self._user.db.usage()
