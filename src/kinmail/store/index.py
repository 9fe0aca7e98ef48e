"""The per-user SQLite index: folders, messages, MODSEQs, expunged UIDs, cached data and the full-text table.

Used only inside `kinmail.store` (`Mailbox` and `UserMailboxes` call it under the user's lock). On disk:
`index_root/DOMAIN/LOCAL.sqlite` in WAL mode (`synchronous=FULL` for durable transactions, NORMAL for the
others), one connection per user shared by all threads and guarded by the user's lock. The index is a cache of
the Maildir: a missing or corrupt file is moved aside and rebuilt (`open_index` reports that it is fresh); the
schema version is `PRAGMA user_version`.

Tables: `folders` (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, SPECIAL-USE, directory mtimes seen at the last scan),
`messages` (UID, file base and current file name, MODSEQ, flags, RFC822.SIZE, internal date), `vanished`
(expunged UIDs with their MODSEQ, RFC 7162 §3.2.5 QRESYNC), `cache` (JSON values per message: envelope,
body structure), `fts` (FTS5, trigram tokenizer so that IMAP SEARCH's substring matching (RFC 9051 §6.4.4)
can use it), `snapshots` (the packed message list of big folders, see `kinmail.store.snapshot`) and `meta`.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kinmail.core.log import get_logger

log = get_logger(__name__)

SCHEMA_VERSION = 5
CACHE_KIB = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders(
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    highestmodseq INTEGER NOT NULL,
    special_use TEXT,
    new_mtime INTEGER NOT NULL DEFAULT 0,
    cur_mtime INTEGER NOT NULL DEFAULT 0,
    scanned_at INTEGER NOT NULL DEFAULT 0,
    stale_uidlist INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages(
    folder INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    base TEXT NOT NULL,
    filename TEXT NOT NULL,
    modseq INTEGER NOT NULL,
    flags TEXT NOT NULL,
    size INTEGER NOT NULL,
    internaldate REAL NOT NULL,
    fts_done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(folder, uid)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_base ON messages(folder, base);
CREATE INDEX IF NOT EXISTS messages_modseq ON messages(folder, modseq);
CREATE INDEX IF NOT EXISTS messages_fts ON messages(folder, fts_done);
CREATE TABLE IF NOT EXISTS vanished(
    folder INTEGER NOT NULL, uid INTEGER NOT NULL, modseq INTEGER NOT NULL, PRIMARY KEY(folder, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cache(
    msg INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(msg, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots(folder INTEGER PRIMARY KEY, modseq INTEGER NOT NULL, data BLOB NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(headers, body, tokenize='trigram');
-- full-text rows of messages that are gone, deleted later by the background indexer (`fts_purge`)
CREATE TABLE IF NOT EXISTS fts_dead(rowid INTEGER PRIMARY KEY);
"""

MESSAGE_COLUMNS = "uid, flags, modseq, size, internaldate, filename"
UID_BITS = 32
UID_MASK = (1 << UID_BITS) - 1


# Full-text rows of messages that are gone (`UserIndex._fts_forget`) until the indexer deletes them: a folder
# made again may get the same id, and its messages the keys of the old ones.
_LIVE = "AND rowid NOT IN (SELECT rowid FROM fts_dead)"
_FIRST = operator.itemgetter(0)  # a row's first column


def msg_key(folder_id: int, uid: int) -> int:
    """One integer for a message: the rowid of its full-text row and the key of its cached values."""
    return (folder_id << UID_BITS) | uid


@dataclass
class FolderRow:
    """One row of `folders`."""

    id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: str | None
    new_mtime: int
    cur_mtime: int
    scanned_at: int
    stale_uidlist: int


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # transactions that must be durable ask (`transaction`)
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # a thread checkpoints instead (`kinmail.store.checkpoint`)
    # SQLite's own page cache is 2 MiB per connection by default, and there is a connection per open user: 50
    # users who get mail (the full-text index touches many pages) held 100 MB. The kernel's page cache keeps the
    # file's pages anyway, so a small cache costs a few more reads, not disk waits.
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    return conn


def open_index(path: Path) -> tuple[sqlite3.Connection, bool]:
    """Open (creating, or replacing when corrupt or of another version) the index; True when it is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists()
    if not fresh:
        try:
            conn = _connect(path)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("SELECT count(*) FROM folders").fetchone()
            if version == 4:  # version 5 only added a table: no rebuild
                conn.executescript(SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                version = SCHEMA_VERSION
            if version == SCHEMA_VERSION:
                _tune_fts(conn)
                return conn, False
            conn.close()
            log.warning("store.index_version", path=str(path), version=version)
        except sqlite3.DatabaseError as exc:
            log.warning("store.index_corrupt", path=str(path), reason=str(exc))
            with contextlib.suppress(Exception):
                conn.close()
        aside = path.with_name(f"{path.name}.broken-{int(time.time())}")
        path.rename(aside)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(aside.with_name(aside.name + suffix))
        fresh = True
    conn = _connect(path)
    os.chmod(path, 0o600)  # it holds the text of the mail; SQLite gives -wal and -shm the same mode
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    _tune_fts(conn)
    return conn, fresh


FTS_AUTOMERGE = 8


def _tune_fts(conn: sqlite3.Connection) -> None:
    """FTS5 merges its b-tree segments once `automerge` of them are on one level (4 by default). Measured over
    100,000 messages (docs/benchmarks-imap.md, twelfth round): 8 takes adding a message's text from 0.88-0.98 to
    0.75 ms of CPU, and SEARCH TEXT over them takes as long as before. Kept in the table's own `fts_config`."""
    row = conn.execute("SELECT v FROM fts_config WHERE k = 'automerge'").fetchone()
    if row is None or row[0] != FTS_AUTOMERGE:
        conn.execute(f"INSERT INTO fts(fts, rank) VALUES ('automerge', {FTS_AUTOMERGE})")


class UserIndex:
    """Queries on one user's index. Not locked by itself: callers hold the user's lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._depth = 0
        self.commits = 0
        """Write transactions committed (`transaction`): when the WAL is due for a checkpoint (`checkpoint`)."""

    def close(self) -> None:
        self.conn.close()

    def transaction(self, *, durable: bool = True) -> _Transaction:
        """One write transaction (`BEGIN IMMEDIATE`: other processes wait); nested calls join the outer one.

        `durable=False` commits without waiting for the disk (`synchronous=NORMAL`, the connection's setting;
        still atomic in WAL mode): a power cut may lose that transaction, never corrupt the index, and the next
        durable commit syncs it too. For what the Maildir holds as well: flags (in the file names), new messages
        (their files are synced before the call that stores them returns), expunges. A durable commit switches
        to `synchronous=FULL` for its own transaction.
        """
        return _Transaction(self, durable)

    def data_version(self) -> int:
        """Changes when another connection (another process) committed."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    # --- meta ----------------------------------------------------------------------------------------------
    def meta_get(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_set(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # --- folders -------------------------------------------------------------------------------------------
    def folders(self) -> list[FolderRow]:
        rows = self.conn.execute("SELECT * FROM folders ORDER BY name").fetchall()
        return [FolderRow(*row) for row in rows]

    def folder(self, name: str) -> FolderRow | None:
        row = self.conn.execute("SELECT * FROM folders WHERE name=?", (name,)).fetchone()
        return None if row is None else FolderRow(*row)

    def folder_by_id(self, folder_id: int) -> FolderRow | None:
        row = self.conn.execute("SELECT * FROM folders WHERE id=?", (folder_id,)).fetchone()
        return None if row is None else FolderRow(*row)

    def new_uidvalidity(self) -> int:
        """A UIDVALIDITY never used before by this user (time based, strictly increasing)."""
        last = int(self.meta_get("last_uidvalidity") or 0)
        value = max(int(time.time()), last + 1)
        self.meta_set("last_uidvalidity", str(value))
        return value

    def add_folder(self, name: str, uidvalidity: int, uidnext: int, special_use: str | None) -> FolderRow:
        self.conn.execute(
            "INSERT INTO folders(name, uidvalidity, uidnext, highestmodseq, special_use) VALUES (?, ?, ?, 1, ?)",
            (name, uidvalidity, uidnext, special_use),
        )
        last = int(self.meta_get("last_uidvalidity") or 0)
        if uidvalidity > last:
            self.meta_set("last_uidvalidity", str(uidvalidity))
        row = self.folder(name)
        assert row is not None
        return row

    def delete_folder(self, folder_id: int) -> None:
        low, high = msg_key(folder_id, 0), msg_key(folder_id + 1, 0) - 1
        self.conn.execute("DELETE FROM cache WHERE msg BETWEEN ? AND ?", (low, high))
        self.conn.execute(
            "INSERT OR IGNORE INTO fts_dead(rowid) SELECT rowid FROM fts WHERE rowid BETWEEN ? AND ?",
            (low, high),
        )
        self.conn.execute("DELETE FROM messages WHERE folder=?", (folder_id,))
        self.conn.execute("DELETE FROM vanished WHERE folder=?", (folder_id,))
        self.conn.execute("DELETE FROM snapshots WHERE folder=?", (folder_id,))
        self.conn.execute("DELETE FROM folders WHERE id=?", (folder_id,))

    def rename_folder(self, folder_id: int, name: str) -> None:
        self.conn.execute("UPDATE folders SET name=? WHERE id=?", (name, folder_id))

    def set_special_use(self, folder_id: int, special_use: str | None) -> None:
        self.conn.execute("UPDATE folders SET special_use=? WHERE id=?", (special_use, folder_id))

    def set_counters(self, folder_id: int, uidnext: int, highestmodseq: int) -> None:
        self.conn.execute(
            "UPDATE folders SET uidnext=?, highestmodseq=? WHERE id=?", (uidnext, highestmodseq, folder_id)
        )

    def set_folder_state(
        self,
        folder_id: int,
        uidnext: int,
        highestmodseq: int,
        scan: tuple[int, int, int] | None = None,
        stale_uidlist: int | None = None,
    ) -> None:
        """The counters after a change, and in the same statement the directories' mtimes and scan time
        (`scan`) and the count of stale `dovecot-uidlist` lines, when given."""
        sets, args = "uidnext=?, highestmodseq=?", [uidnext, highestmodseq]
        if scan is not None:
            sets += ", new_mtime=?, cur_mtime=?, scanned_at=?"
            args += scan
        if stale_uidlist is not None:
            sets += ", stale_uidlist=?"
            args.append(stale_uidlist)
        self.conn.execute(f"UPDATE folders SET {sets} WHERE id=?", (*args, folder_id))

    def set_scan(self, folder_id: int, new_mtime: int, cur_mtime: int, scanned_at: int) -> None:
        self.conn.execute(
            "UPDATE folders SET new_mtime=?, cur_mtime=?, scanned_at=? WHERE id=?",
            (new_mtime, cur_mtime, scanned_at, folder_id),
        )

    def add_stale(self, folder_id: int, count: int) -> int:
        self.conn.execute("UPDATE folders SET stale_uidlist=stale_uidlist+? WHERE id=?", (count, folder_id))
        row = self.conn.execute("SELECT stale_uidlist FROM folders WHERE id=?", (folder_id,)).fetchone()
        return int(row[0])

    def reset_stale(self, folder_id: int) -> None:
        self.conn.execute("UPDATE folders SET stale_uidlist=0 WHERE id=?", (folder_id,))

    def count(self, folder_id: int) -> int:
        return int(
            self.conn.execute("SELECT count(*) FROM messages WHERE folder=?", (folder_id,)).fetchone()[0]
        )

    def usage(self) -> tuple[int, int]:
        row = self.conn.execute("SELECT coalesce(sum(size), 0), count(*) FROM messages").fetchone()
        return int(row[0]), int(row[1])

    # --- messages ------------------------------------------------------------------------------------------
    def message_rows(
        self, folder_id: int, since_modseq: int = 0
    ) -> list[tuple[int, str, int, int, float, str]]:
        """(uid, flags, modseq, size, internaldate, filename) in UID order, only those changed after a MODSEQ."""
        if since_modseq:
            # by the MODSEQ index: left to itself, SQLite walks the whole folder in UID order to save a sort
            # (12 ms for 100,000 messages at every change, for the few rows that changed)
            sql = (
                f"SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_modseq"
                " WHERE folder=? AND modseq>? ORDER BY uid"
            )
            return self.conn.execute(sql, (folder_id, since_modseq)).fetchall()
        sql = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE folder=? ORDER BY uid"
        return self.conn.execute(sql, (folder_id,)).fetchall()

    def file_rows(self, folder_id: int) -> dict[str, tuple[int, str, str]]:
        """base → (uid, filename, flags) for the scan of a folder."""
        rows = self.conn.execute(
            "SELECT base, uid, filename, flags FROM messages WHERE folder=?", (folder_id,)
        )
        return {base: (uid, filename, flags) for base, uid, filename, flags in rows}

    def uids_of_bases(self, folder_id: int, bases: list[str]) -> list[int]:
        """The UIDs of the messages with these base names, in their order; those not indexed are left out."""
        marks = ",".join("?" * len(bases))
        found = dict(
            self.conn.execute(
                f"SELECT base, uid FROM messages WHERE folder=? AND base IN ({marks})", (folder_id, *bases)
            ).fetchall()
        )
        return [found[base] for base in bases if base in found]

    def uid_bases(self, folder_id: int) -> list[tuple[int, str]]:
        return self.conn.execute("SELECT uid, base FROM messages WHERE folder=?", (folder_id,)).fetchall()

    def message_id(self, folder_id: int, uid: int) -> int | None:
        row = self.conn.execute(
            "SELECT 1 FROM messages WHERE folder=? AND uid=?", (folder_id, uid)
        ).fetchone()
        return None if row is None else msg_key(folder_id, uid)

    def insert_message(
        self,
        folder_id: int,
        uid: int,
        base: str,
        filename: str,
        modseq: int,
        flags: str,
        size: int,
        internaldate: float,
    ) -> int:
        self.conn.execute(
            "INSERT INTO messages(folder, uid, base, filename, modseq, flags, size, internaldate)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (folder_id, uid, base, filename, modseq, flags, size, internaldate),
        )
        return msg_key(folder_id, uid)

    def update_flags(self, folder_id: int, uid: int, filename: str, flags: str, modseq: int) -> None:
        self.conn.execute(
            "UPDATE messages SET filename=?, flags=?, modseq=? WHERE folder=? AND uid=?",
            (filename, flags, modseq, folder_id, uid),
        )

    def update_filename(self, folder_id: int, uid: int, filename: str) -> None:
        self.conn.execute(
            "UPDATE messages SET filename=? WHERE folder=? AND uid=?", (filename, folder_id, uid)
        )

    def delete_messages(self, folder_id: int, uids: Iterable[int], modseq: int) -> int:
        """Remove messages and note their UIDs as vanished; how many had full-text rows (`_fts_forget`)."""
        forgotten = 0
        for uid in uids:
            key = msg_key(folder_id, uid)
            gone = self.conn.execute(
                "DELETE FROM messages WHERE folder=? AND uid=? RETURNING fts_done", (folder_id, uid)
            ).fetchall()
            if gone:
                self.conn.execute("DELETE FROM cache WHERE msg=?", (key,))
                if gone[0][0]:
                    self._fts_forget(key)
                    forgotten += 1
            self.conn.execute(
                "INSERT OR REPLACE INTO vanished(folder, uid, modseq) VALUES (?, ?, ?)",
                (folder_id, uid, modseq),
            )
        return forgotten

    def vanished_since(self, folder_id: int, modseq: int) -> list[int]:
        rows = self.conn.execute(
            "SELECT uid FROM vanished WHERE folder=? AND modseq>? ORDER BY uid", (folder_id, modseq)
        )
        return [int(r[0]) for r in rows]

    def snapshot_get(self, folder_id: int) -> tuple[int, bytes] | None:
        row = self.conn.execute("SELECT modseq, data FROM snapshots WHERE folder=?", (folder_id,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def has_snapshot(self, folder_id: int) -> bool:
        return (
            self.conn.execute("SELECT 1 FROM snapshots WHERE folder=?", (folder_id,)).fetchone() is not None
        )

    def snapshot_put(self, folder_id: int, modseq: int, data: bytes) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO snapshots(folder, modseq, data) VALUES (?, ?, ?)",
            (folder_id, modseq, data),
        )

    # --- cache and full text -------------------------------------------------------------------------------
    def cache_get(self, msg_id: int, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM cache WHERE msg=? AND key=?", (msg_id, key)).fetchone()
        return None if row is None else str(row[0])

    def cache_put(self, msg_id: int, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO cache(msg, key, value) VALUES (?, ?, ?)", (msg_id, key, value)
        )

    def fts_pending(self, folder_id: int, limit: int) -> list[tuple[int, str]]:
        rows = self.conn.execute(
            # by its index: without statistics SQLite takes the primary key and reads the whole folder
            "SELECT uid, filename FROM messages INDEXED BY messages_fts WHERE folder=? AND fts_done=0 LIMIT ?",
            (folder_id, limit),
        )
        return [(msg_key(folder_id, int(a)), str(b)) for a, b in rows]

    def fts_put(self, msg_id: int, headers: str, body: str) -> None:
        self.conn.execute("DELETE FROM fts WHERE rowid=?", (msg_id,))  # a row left by an expunged message
        self.conn.execute("DELETE FROM fts_dead WHERE rowid=?", (msg_id,))
        self.conn.execute("INSERT INTO fts(rowid, headers, body) VALUES (?, ?, ?)", (msg_id, headers, body))
        self.fts_skip(msg_id)

    def _fts_forget(self, msg_id: int) -> None:
        """The full-text row of a message that is gone. Deleting a row from the FTS5 table tokenizes its text
        again (1.5 ms for a 2 KB message), so an EXPUNGE, run on the event loop, only marks it; searches skip
        marked rows and the background indexer deletes them (`fts_purge`)."""
        self.conn.execute("INSERT OR IGNORE INTO fts_dead(rowid) VALUES (?)", (msg_id,))

    def fts_dead_any(self) -> bool:
        return self.conn.execute("SELECT 1 FROM fts_dead LIMIT 1").fetchone() is not None

    def fts_purge(self, limit: int) -> bool:
        """Delete up to `limit` marked full-text rows (`_fts_forget`); True when more are left."""
        rows = [int(r[0]) for r in self.conn.execute("SELECT rowid FROM fts_dead LIMIT ?", (limit + 1,))]
        for msg_id in rows[:limit]:
            self.conn.execute("DELETE FROM fts WHERE rowid=?", (msg_id,))
            self.conn.execute("DELETE FROM fts_dead WHERE rowid=?", (msg_id,))
        return len(rows) > limit

    def fts_skip(self, msg_id: int) -> None:
        self.conn.execute(
            "UPDATE messages SET fts_done=1 WHERE folder=? AND uid=?", (msg_id >> UID_BITS, msg_id & UID_MASK)
        )

    def fts_search(self, folder_id: int, query: str, body_only: bool) -> set[int]:
        """UIDs whose text contains `query` (case-insensitive substring)."""
        low, high = msg_key(folder_id, 0), msg_key(folder_id + 1, 0) - 1
        if len(query) >= 3:
            phrase = '"' + query.replace('"', '""') + '"'
            match = f"body : {phrase}" if body_only else f"{{headers body}} : {phrase}"
            sql = f"SELECT rowid - ?2 FROM fts WHERE fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3 {_LIVE}"
            return set(map(_FIRST, self.conn.execute(sql, (match, low, high))))
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        cond = "body LIKE ?1 ESCAPE '\\'"
        if not body_only:
            cond = f"(headers LIKE ?1 ESCAPE '\\' OR {cond})"
        sql = f"SELECT rowid - ?2 FROM fts WHERE {cond} AND rowid BETWEEN ?2 AND ?3 {_LIVE}"
        return set(map(_FIRST, self.conn.execute(sql, (pattern, low, high))))


class _Transaction:
    """`UserIndex.transaction`; a class rather than a generator, as every store write goes through it."""

    __slots__ = ("_durable", "_index", "_outer")

    def __init__(self, index: UserIndex, durable: bool) -> None:
        self._index = index
        self._durable = durable
        self._outer = False

    def __enter__(self) -> None:
        index = self._index
        if index._depth:
            index._depth += 1
            return
        conn = index.conn
        if self._durable:
            conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            if self._durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            raise
        index._depth = 1
        self._outer = True

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        index = self._index
        if not self._outer:
            index._depth -= 1
            return
        index._depth = 0
        conn = index.conn
        try:
            if exc_type is not None:
                conn.execute("ROLLBACK")
            else:
                conn.execute("COMMIT")
                index.commits += 1
        finally:
            if self._durable:
                conn.execute("PRAGMA synchronous=NORMAL")
