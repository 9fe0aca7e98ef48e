"""Maildir files as Dovecot writes them: unique names, flags in names, keywords, `dovecot-uidlist`.

Used only inside `kinmail.store`. On disk, per folder directory (the user's Maildir root for INBOX, `.Name` for
the others): `cur/ new/ tmp/`, message files named
`<time>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<vsize>:2,<flags>` (flags `D F P R S T` and keyword letters `a`–`z`
from `dovecot-keywords`), the `dovecot-uidlist` file (format 3) that keeps UIDs and UIDVALIDITY so that a lost
index does not renumber, `maildirfolder` in sub-folders (Maildir++), and `kinmail-special-use` when a folder has
a SPECIAL-USE attribute (RFC 6154).

A new message goes tmp → fsync → rename into new/ or cur/ → fsync of the directory (the Maildir protocol); a
message found half-written in tmp/ is never shown and is removed after 36 hours.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kinmail.core.atomic import atomic_write, fsync_dir, write_all

SYSTEM_FLAGS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
FLAG_LETTERS = {flag.lower(): letter for letter, flag in SYSTEM_FLAGS.items()}
CANONICAL_FLAGS = {flag.lower(): flag for flag in SYSTEM_FLAGS.values()}
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"
INFO_SEP = ":2,"
TMP_MAX_AGE = 36 * 3600
EXPUNGED_PREFIX = "expunged."
"""Begins the name of an expunged message's file moved into tmp/ until it is deleted (`kinmail.store.reaper`):
never the name of a message being written."""
UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"
SPECIAL_USE_FILE = "kinmail-special-use"

_counter = itertools.count(1)
_host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


def canonical_flag(flag: str) -> str:
    """`\\seen` → `\\Seen`, `$forwarded` → `$Forwarded`; keywords are kept as given."""
    return CANONICAL_FLAGS.get(flag.lower(), flag)


def new_base(size: int, vsize: int, when: float | None = None) -> str:
    """A unique file name base (without `:2,` flags), as Dovecot makes them."""
    now = time.time() if when is None else when
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{_host},S={size},W={vsize}"


def split_name(filename: str) -> tuple[str, str]:
    """`base:2,FS` → (`base`, `FS`); a name without info → (name, "")."""
    base, sep, info = filename.partition(":")
    if not sep:
        return filename, ""
    if info.startswith("2,"):
        return base, info[2:]
    return base, ""


def sizes_from_base(base: str) -> tuple[int | None, int | None]:
    """The `S=` (file size) and `W=` (size with CRLF line ends) fields of a name, when present."""
    size = vsize = None
    for field in base.split(",")[1:]:
        if field.startswith("S=") and field[2:].isdigit():
            size = int(field[2:])
        elif field.startswith("W=") and field[2:].isdigit():
            vsize = int(field[2:])
    return size, vsize


def crlf_size(path: Path) -> int:
    """RFC822.SIZE of a file: its size when every line end were CRLF."""
    data = path.read_bytes()
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def to_crlf(data: bytes) -> bytes:
    """Convert bare LF line ends to CRLF (files other programs wrote); CRLF data is returned as it is."""
    lf = data.count(b"\n")
    if lf == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Keywords:
    """A folder's `dovecot-keywords`: keyword `i` is the letter `a`+i in file names."""

    def __init__(self, folder_path: Path) -> None:
        self.path = folder_path / KEYWORDS
        self.names: list[str | None] = [None] * len(KEYWORD_LETTERS)
        self._mtime: int | None = None
        self.load()

    def load(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        if st.st_mtime_ns == self._mtime:
            return
        self._mtime = st.st_mtime_ns
        names: list[str | None] = [None] * len(KEYWORD_LETTERS)
        for line in self.path.read_text("utf-8", errors="replace").splitlines():
            idx, _, name = line.partition(" ")
            if idx.isdigit() and int(idx) < len(names) and name:
                names[int(idx)] = name
        self.names = names

    def letter(self, keyword: str, *, create: bool) -> str | None:
        """The letter of `keyword`, adding it to the file when `create` and there is room."""
        for i, name in enumerate(self.names):
            if name is not None and name.lower() == keyword.lower():
                return KEYWORD_LETTERS[i]
        if not create:
            return None
        self.load()
        for i, name in enumerate(self.names):
            if name is None:
                self.names[i] = keyword
                text = "".join(f"{j} {n}\n" for j, n in enumerate(self.names) if n is not None)
                atomic_write(self.path, text, mode=0o600)
                self._mtime = self.path.stat().st_mtime_ns
                return KEYWORD_LETTERS[i]
            if name.lower() == keyword.lower():
                return KEYWORD_LETTERS[i]
        return None

    def flags_from_info(self, info: str) -> frozenset[str]:
        flags: set[str] = set()
        for ch in info:
            if ch in SYSTEM_FLAGS:
                flags.add(SYSTEM_FLAGS[ch])
            elif ch in KEYWORD_LETTERS:
                name = self.names[ord(ch) - ord("a")]
                if name is not None:
                    flags.add(name)
        return frozenset(flags)

    def info_for(self, flags: Iterable[str]) -> str:
        """The `:2,` letters for `flags` (sorted, as Maildir wants); keywords past the 26th stay index-only."""
        letters = set()
        for flag in flags:
            letter = FLAG_LETTERS.get(flag.lower())
            if letter == "P":
                # $Forwarded: `P` for mutt and friends, and a keyword letter, which is how Dovecot keeps it
                forwarded = self.letter(SYSTEM_FLAGS["P"], create=True)
                if forwarded is not None:
                    letters.add(forwarded)
            if letter is None and not flag.startswith("\\"):
                letter = self.letter(flag, create=True)
            if letter is not None:
                letters.add(letter)
        return "".join(sorted(letters))


def filename_for(base: str, info: str, *, new: bool) -> str:
    """`new/base` for an unseen message without flags; otherwise `cur/base:2,info`."""
    if new and not info:
        return f"new/{base}"
    return f"cur/{base}{INFO_SEP}{info}"


def make_folder_dirs(path: Path, *, subfolder: bool, sync: bool = True) -> None:
    """Create `cur/ new/ tmp/` (and `maildirfolder` for Maildir++ sub-folders), durably unless `sync` is False
    (the caller then fsyncs the folder and its parent itself)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(mode=0o700, exist_ok=True)
    if subfolder and not (path / "maildirfolder").exists():
        (path / "maildirfolder").touch()
    if sync:
        fsync_dir(path)
        fsync_dir(path.parent)


def write_tmp_unsynced(folder_path: Path, datas: Sequence[bytes]) -> tuple[list[tuple[Path, str]], list[int]]:
    """Write each message to a new file in tmp/; returns (tmp path, base name) of each and the files, still
    open, for the caller to sync and close. All of them written, or none (and nothing left open)."""
    written = tmp_names(folder_path, datas)
    return written, write_files(written, datas)


def tmp_names(folder_path: Path, datas: Sequence[bytes]) -> list[tuple[Path, str]]:
    """A new (tmp path, base name) for each message, nothing written yet (`write_files`)."""
    tmp_dir = folder_path / "tmp"
    out: list[tuple[Path, str]] = []
    for data in datas:
        base = new_base(len(data), len(data))
        out.append((tmp_dir / base, base))
    return out


def write_files(written: Sequence[tuple[Path, str]], datas: Sequence[bytes]) -> list[int]:
    """Create each tmp file of `tmp_names` and write its message; returns the files, still open, for the caller
    to sync and close. All of them written, or none (and nothing left open or behind)."""
    fds: list[int] = []
    try:
        for (tmp, _base), data in zip(written, datas, strict=True):
            fds.append(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            write_all(fds[-1], data)
    except BaseException:
        for fd in fds:
            os.close(fd)
        for tmp, _base in written[: len(fds)]:
            tmp.unlink(missing_ok=True)
        raise
    return fds


def clean_tmp(folder_path: Path, now: float | None = None) -> int:
    """Remove files older than 36 hours from tmp/ (the Maildir rule), and expunged messages' files of any age
    left there (`kinmail.store.reaper`); return how many."""
    cutoff = (time.time() if now is None else now) - TMP_MAX_AGE
    removed = 0
    try:
        entries = list(os.scandir(folder_path / "tmp"))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and (
                entry.name.startswith(EXPUNGED_PREFIX)
                or (entry.stat().st_atime < cutoff and entry.stat().st_mtime < cutoff)
            ):
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


@dataclass
class UidList:
    """What `dovecot-uidlist` says: UIDVALIDITY, next UID, and the UID of each file base."""

    uidvalidity: int
    nextuid: int
    uids: dict[str, int]


def read_uidlist(folder_path: Path) -> UidList | None:
    """Parse `dovecot-uidlist` (format 3, and the old format 1); None when missing or unreadable."""
    try:
        text = (folder_path / UIDLIST).read_text("utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    lines = text.split("\n")
    header = lines[0].split()
    if not header:
        return None
    uidvalidity = nextuid = 0
    try:
        if header[0] == "1" and len(header) >= 3:
            uidvalidity, nextuid = int(header[1]), int(header[2])
        elif header[0] in ("2", "3"):
            for field in header[1:]:
                if field[:1] == "V":
                    uidvalidity = int(field[1:])
                elif field[:1] == "N":
                    nextuid = int(field[1:])
        else:
            return None
    except ValueError:
        return None
    version = header[0]
    uids: dict[str, int] = {}
    for line in lines[1:]:
        if not line:
            continue
        uid_text, _, rest = line.partition(" ")
        if not uid_text.isdigit():
            continue
        if version == "1":
            name = rest.strip()
        else:
            colon = (" " + rest).find(" :")  # extension fields (e.g. `P` UIDLs) may hold a colon
            if colon < 0:
                continue
            name = rest[colon + 1 :]
        base = name.partition(":")[0]
        if base:
            uids[base] = int(uid_text)
    if uids:
        nextuid = max(nextuid, max(uids.values()) + 1)
    if uidvalidity <= 0:
        return None
    return UidList(uidvalidity, max(nextuid, 1), uids)


def write_uidlist(
    folder_path: Path, uidvalidity: int, nextuid: int, entries: Iterable[tuple[int, str]]
) -> None:
    """Rewrite `dovecot-uidlist` atomically with the given (uid, base) entries in UID order.

    Fields this module does not use are kept: extra header fields (such as Dovecot's `G` GUID) and the
    extension fields of each kept entry (such as `P`, the saved POP3 UIDL, or `W`, the virtual size).
    """
    header_extra, entry_extra = _uidlist_extras(folder_path)
    lines = [" ".join([f"3 V{uidvalidity} N{nextuid}", *header_extra]) + "\n"]
    for uid, base in sorted(entries):
        extra = entry_extra.get(base)
        lines.append(f"{uid} {extra} :{base}\n" if extra else f"{uid} :{base}\n")
    atomic_write(folder_path / UIDLIST, "".join(lines), mode=0o600)


def _uidlist_extras(folder_path: Path) -> tuple[list[str], dict[str, str]]:
    """The fields of an existing format-3 `dovecot-uidlist` other than UIDVALIDITY, next UID and the
    file name: (extra header fields, {file base: extension fields of its line})."""
    try:
        text = (folder_path / UIDLIST).read_text("utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return [], {}
    lines = text.split("\n")
    header = lines[0].split()
    if not header or header[0] != "3":
        return [], {}
    header_extra = [f for f in header[1:] if f[:1] not in ("V", "N")]
    entry_extra: dict[str, str] = {}
    for line in lines[1:]:
        uid_text, _, rest = line.partition(" ")
        if not uid_text.isdigit():
            continue
        colon = (" " + rest).find(" :")  # extension fields may hold a colon; the name follows " :"
        fields = rest[:colon].strip() if colon >= 0 else ""
        base = rest[colon + 1 :].partition(":")[0] if colon >= 0 else ""
        if base and fields:
            entry_extra[base] = fields
    return header_extra, entry_extra


def append_uidlist(folder_path: Path, entries: Iterable[tuple[int, str]], *, create: bool = True) -> None:
    """Append (uid, base) lines to `dovecot-uidlist`, before the index commits them. Not synced: a crash of
    the process loses nothing (the page cache has it), a power cut may cost the list its last lines, and then
    the UIDs come from the index or are given anew; the messages themselves are synced. See docs/store.md.
    With `create=False` a missing list raises FileNotFoundError instead of being started with these lines."""
    text = "".join(f"{uid} :{base}\n" for uid, base in entries)
    if not text:
        return
    flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT if create else 0)
    fd = os.open(folder_path / UIDLIST, flags, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def read_special_use(folder_path: Path) -> str | None:
    try:
        value = (folder_path / SPECIAL_USE_FILE).read_text("utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return value if value.startswith("\\") and value[1:].isalpha() else None


def write_special_use(folder_path: Path, special_use: str | None) -> None:
    if special_use:
        # a hint only (the index keeps the attribute; standard names get theirs back on a rebuild)
        tmp = folder_path / f".{SPECIAL_USE_FILE}.tmp"
        tmp.write_text(special_use + "\n", "utf-8")
        os.replace(tmp, folder_path / SPECIAL_USE_FILE)
    else:
        (folder_path / SPECIAL_USE_FILE).unlink(missing_ok=True)
