"""The selected mailbox as one session sees it: its own sequence-number view, the flags it has told the client,
and the changes it still owes the client (RFC 9051 §7.4-7.5, RFC 7162 §3.2.10 VANISHED).

Other sessions' commits arrive as store notifications that mark the view dirty; `sync` then asks the store
for `changes_since(modseq)` and reports EXISTS, flag FETCHes and — only when the rules allow (never during
FETCH/STORE/SEARCH by sequence number, RFC 9051 §7.5.1) — EXPUNGE or VANISHED. \\Recent (IMAP4rev1) is
tracked in memory per folder. Keeps nothing on disk.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from kinmail.imapserver.session import QUICK_MESSAGES, QUICK_UIDS, quick
from kinmail.proto.imap_args import SeqSet
from kinmail.proto.imap_response import ImapError, Status
from kinmail.store.errors import NoSuchFolder

if TYPE_CHECKING:
    from kinmail.imapserver.session import Session
    from kinmail.store.mailbox import Mailbox
    from kinmail.store.types import MessageInfo

# (user, folder, uidvalidity) -> highest UID some read-write session has seen; above it messages are \Recent.
_RECENT_MARK: dict[tuple[str, str, int], int] = {}


_FLAGS_OF = operator.attrgetter("flags")
DELETED = "\\Deleted"


class UidMap:
    """The view's messages by UID: the ascending UID list and a parallel list of `MessageInfo`, rather than a
    dict (8 bytes a message instead of about 40). Sessions that select a folder in the same state share one
    pair of lists (`shared_lists`) until one of them changes its view, which then copies them: 1,000 sessions in
    IDLE on 50 users' folders hold 50 copies, not 1,000. Lookups bisect the UID list. Reads like a dict; only
    `SelectedMailbox` changes it. The UIDs flagged \\Deleted are found once and then kept as the view changes,
    so that each EXPUNGE of a big folder does not look at every message again."""

    __slots__ = ("_deleted", "_infos", "_shared", "_uids")

    def __init__(self, uids: list[int], infos: list[MessageInfo], *, shared: bool = False) -> None:
        self._uids = uids
        self._infos = infos
        self._shared = shared
        self._deleted: set[int] | None = None

    @property
    def uids(self) -> list[int]:
        return self._uids

    def _own(self) -> None:
        if self._shared:
            self._uids, self._infos, self._shared = list(self._uids), list(self._infos), False

    def index(self, uid: int) -> int:
        """The position of `uid` in the view, -1 when it is not there."""
        i = bisect.bisect_left(self._uids, uid)
        return i if i < len(self._uids) and self._uids[i] == uid else -1

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.index(uid) >= 0

    def __getitem__(self, uid: int) -> MessageInfo:
        i = self.index(uid)
        if i < 0:
            raise KeyError(uid)
        return self._infos[i]

    def get(self, uid: int) -> MessageInfo | None:
        i = self.index(uid)
        return None if i < 0 else self._infos[i]

    def __len__(self) -> int:
        return len(self._infos)

    def many(self, uids: list[int]) -> tuple[list[MessageInfo], list[int]]:
        """The messages of `uids` (ascending) that are in the view, and their sequence numbers."""
        seqs = self.seqs(uids)
        return [self._infos[seq - 1] for seq in seqs], seqs

    def seqs(self, uids: list[int]) -> list[int]:
        """The sequence numbers of `uids` (ascending) that are in the view. A few are bisected for, each bisect
        starting where the last ended; many (a SEARCH hitting most of a big folder) are found in one pass over
        the view that runs without a Python loop per message."""
        lo, end, view = 0, len(self._uids), self._uids
        if len(uids) * 16 > end:
            return list(itertools.compress(range(1, end + 1), map(set(uids).__contains__, view)))
        seqs: list[int] = []
        for uid in uids:
            lo = bisect.bisect_left(view, uid, lo, end)
            if lo < end and view[lo] == uid:
                seqs.append(lo + 1)
        return seqs

    def values(self) -> list[MessageInfo]:
        return self._infos

    def flag_sets(self) -> set[frozenset[str]]:
        """The distinct flag sets of the view's messages (a few, however many messages)."""
        return set(map(_FLAGS_OF, self._infos))

    def with_flag(self, flag: str) -> list[int]:
        """UIDs of the messages that carry `flag` (EXPUNGE's \\Deleted), ascending."""
        if flag == DELETED and self._deleted is not None:
            return sorted(self._deleted)
        # without a Python loop per message
        has = map(operator.contains, map(_FLAGS_OF, self._infos), itertools.repeat(flag))
        found = list(itertools.compress(self._uids, has))
        if flag == DELETED:
            self._deleted = set(found)
        return found

    def _note(self, info: MessageInfo) -> None:
        if self._deleted is not None:
            if DELETED in info.flags:
                self._deleted.add(info.uid)
            else:
                self._deleted.discard(info.uid)

    def items(self) -> Iterator[tuple[int, MessageInfo]]:
        return zip(self._uids, self._infos, strict=True)

    def replace(self, info: MessageInfo) -> None:
        """New flags or MODSEQ of a message in the view (ignored when it is not in it)."""
        i = self.index(info.uid)
        if i >= 0 and self._infos[i] is not info:
            self._own()
            self._infos[i] = info
            self._note(info)

    def append(self, info: MessageInfo) -> None:
        """A message above the view's last UID joins it."""
        self._own()
        self._uids.append(info.uid)
        self._infos.append(info)
        self._note(info)

    def remove(self, uid: int) -> None:
        i = self.index(uid)
        if i >= 0:
            self._own()
            del self._uids[i]
            del self._infos[i]
            if self._deleted is not None:
                self._deleted.discard(uid)


# (user, folder, uidvalidity) -> the lists of the last SELECT: (HIGHESTMODSEQ, UIDs, infos); one entry a folder
_SHARED: dict[tuple[str, str, int], tuple[int, list[int], list[MessageInfo]]] = {}


def shared_lists(key: tuple[str, str, int], modseq: int, infos: list[MessageInfo]) -> UidMap:
    """A view of `infos` (the folder's messages as of `modseq`), sharing the lists of an earlier SELECT of the
    folder in the same state. The same HIGHESTMODSEQ and count mean the same messages: every change to a folder
    raises its MODSEQ."""
    known = _SHARED.get(key)
    if known is not None and known[0] == modseq and len(known[2]) == len(infos):
        return UidMap(known[1], known[2], shared=True)
    uids = [m.uid for m in infos]
    _SHARED[key] = (modseq, uids, infos)
    return UidMap(uids, infos, shared=True)


def recent_mark(user: str, mailbox: Mailbox) -> int:
    return _RECENT_MARK.get((user, mailbox.name, mailbox.uidvalidity), 0)


def flags_text(flags: Iterable[str], recent: bool = False) -> str:
    items = sorted(flags)
    if recent:
        items.append("\\Recent")
    return "(" + " ".join(items) + ")"


_FLAGS_BYTES: dict[tuple[frozenset[str], bool], bytes] = {}


def flags_bytes(flags: frozenset[str], recent: bool) -> bytes:
    """`flags_text` as bytes, kept per flag set: a folder's messages share a handful of them (FETCH FLAGS)."""
    key = (flags, recent)
    text = _FLAGS_BYTES.get(key)
    if text is None:
        if len(_FLAGS_BYTES) >= 4096:
            _FLAGS_BYTES.clear()
        text = _FLAGS_BYTES[key] = flags_text(flags, recent).encode()
    return text


class SelectedMailbox:
    def __init__(self, session: Session, mailbox: Mailbox, *, readonly: bool) -> None:
        self.mailbox = mailbox
        self.name = mailbox.name  # kept: the store's property fails once another session deletes the folder
        self.user = session.user or ""
        self.readonly = readonly
        self.condstore = "CONDSTORE" in session.enabled
        self.qresync = "QRESYNC" in session.enabled
        self.rev2 = "IMAP4REV2" in session.enabled  # IMAP4rev2 has no \\Recent (RFC 9051 §2.3.2)
        self.msgs = UidMap([], [])
        self.highestmodseq = 0
        self.expunged: set[int] = set()  # gone in the store, not yet told to the client
        self.recent: set[int] = set()
        self.dirty = False
        self._prefetched: tuple[int, list[MessageInfo], list[int]] | None = None
        self._exists_sent = 0

    # --- loading -----------------------------------------------------------------------------------------
    @property
    def uids(self) -> list[int]:
        """The view's UIDs, ascending (sequence number n is `uids[n - 1]`); change them through `msgs`."""
        return self.msgs.uids

    def load(self, infos: list[MessageInfo], modseq: int) -> None:
        """Called once at SELECT with the store's message list (UID order) as of HIGHESTMODSEQ `modseq`."""
        key = (self.user, self.mailbox.name, self.mailbox.uidvalidity)
        self.msgs = shared_lists(key, modseq, infos)
        self.highestmodseq = modseq
        mark = _RECENT_MARK.get(key, 0)
        self.recent = set() if self.rev2 else set(self.uids[bisect.bisect_right(self.uids, mark) :])
        if not self.readonly and self.uids:
            _RECENT_MARK[key] = max(mark, self.uids[-1])
        self._exists_sent = len(self.uids)

    @property
    def exists(self) -> int:
        return len(self.uids)

    # --- lookups -----------------------------------------------------------------------------------------
    def seq_of(self, uid: int) -> int:
        """The message's sequence number, 0 when it is not in the view."""
        return self.msgs.index(uid) + 1

    def uids_for(self, seqset: SeqSet, *, uid: bool, saved: list[int] | None = None) -> list[int]:
        """The UIDs a sequence set or UID set names, in UID order (missing UIDs are left out)."""
        if seqset.saved:
            wanted = saved or []
            return [u for u in wanted if u in self.msgs]
        if not uid:
            return [self.uids[s - 1] for s in seqset.resolve(len(self.uids))]
        if not self.uids:
            return []
        out: set[int] = set()
        largest = self.uids[-1]
        for lo, hi in seqset.uid_ranges(largest):
            a = bisect.bisect_left(self.uids, lo)
            b = bisect.bisect_right(self.uids, hi)
            out.update(self.uids[a:b])
        return sorted(out)

    def check_seqset(self, seqset: SeqSet) -> None:
        """RFC 9051 §6.4.5: a sequence number above EXISTS is an error ("*" is fine)."""
        for lo, hi in seqset.ranges:
            if (
                lo is None or hi is None
            ):  # "n:*" is fine even past the end or in an empty mailbox (as Dovecot)
                continue
            if max(lo, hi) > len(self.uids):
                raise ImapError(Status.BAD, "Invalid sequence number")

    # --- changes -----------------------------------------------------------------------------------------
    def note_flags(self, infos: Iterable[MessageInfo]) -> None:
        """This session changed flags itself (and reports them itself)."""
        for info in infos:
            self.msgs.replace(info)

    def note_own_commit(self) -> None:
        """This session just made one store commit to the folder and applied its effect to the view itself
        (STORE, EXPUNGE). When the folder's MODSEQ is just one above what the view had seen, that commit was
        the only change, and the next `sync` need not ask the store for changes."""
        try:
            top = self.mailbox.highestmodseq
        except NoSuchFolder:
            return
        if top == self.highestmodseq + 1:
            self.highestmodseq = top
            self.dirty = False

    def note_expunged(self, uids: Iterable[int]) -> None:
        self.expunged.update(u for u in uids if u in self.msgs)

    def _changes(self) -> tuple[int, list[MessageInfo], list[int]]:
        """In a worker thread: (floor, changed, vanished) since what the view has seen. The floor is read
        before asking: a commit that lands meanwhile is in the answer, and its MODSEQ must not count as seen
        unless it is (an expunge-only commit carries none)."""
        floor = self.mailbox.highestmodseq
        changed, vanished = self.mailbox.changes_since(self.highestmodseq)
        return floor, changed, vanished

    def _quick_holder(self) -> Mailbox | None:
        """The folder, for `quick` store calls, when it is small enough to scan on the event loop."""
        return self.mailbox if len(self.uids) <= QUICK_MESSAGES else None

    def quick_for(self, uids: list[int]) -> Mailbox | None:
        """The folder, for a `quick` store call on `uids` (STORE, EXPUNGE): when they are few enough to change
        on the event loop."""
        return self.mailbox if len(uids) <= QUICK_UIDS else None

    async def refresh(self) -> None:
        """Pick up files other programs added to or removed from the Maildir (NOOP, CHECK, IDLE), and ask
        for the folder's changes in the same trip to a worker thread; the next `sync` reports them."""
        told, self.dirty = self.dirty, False  # a change broadcast while the worker runs sets it again

        def work() -> tuple[int, list[MessageInfo], list[int]] | None:
            # This process's commits are told to the view; another process's (caught up with here, as are
            # files other programs dropped) move the folder's HIGHESTMODSEQ past the view's. With neither
            # there is nothing to ask the index for.
            self.mailbox.refresh()
            if not told and self.mailbox.highestmodseq == self.highestmodseq:
                return None
            return self._changes()

        try:
            self._prefetched = await quick(self._quick_holder(), work)
        except NoSuchFolder:
            self.dirty = True  # reported by the next sync

    def note_own_append(self, uids: list[int]) -> None:
        """This session appended `uids` to this folder (APPEND). When the folder's MODSEQ grew by exactly
        one per message, those were the only changes, and the view takes them from the store's in-memory
        list instead of asking for changes."""
        try:
            top = self.mailbox.highestmodseq
            infos = [self.mailbox.peek(uid) for uid in uids]
        except NoSuchFolder:
            return
        last = self.uids[-1] if self.uids else 0
        if top != self.highestmodseq + len(uids) or not all(
            info is not None and info.uid > last for info in infos
        ):
            self.dirty = True
            return
        self._apply_new([info for info in infos if info is not None])
        self.highestmodseq = top
        self.dirty = False

    async def sync(self, session: Session, *, expunges: bool) -> None:
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None:
            self._apply(session, prefetched[1], prefetched[2], prefetched[0])
        if self.dirty:
            self.dirty = False
            try:
                floor, changed, vanished = await quick(self._quick_holder(), self._changes)
            except NoSuchFolder:
                # another session deleted the selected folder: nothing sensible is left to show
                session.untagged("BYE The selected mailbox was deleted")
                session.close()
                session.state = type(session.state).LOGOUT
                return
            self._apply(session, changed, vanished, floor)
        if expunges and self.expunged:
            self._send_expunges(session)
        if len(self.uids) != self._exists_sent:
            self._exists_sent = len(self.uids)
            session.untagged(f"{len(self.uids)} EXISTS")
            if "IMAP4REV2" not in session.enabled:
                session.untagged(f"{len(self.recent)} RECENT")

    def _apply(self, session: Session, changed: list[MessageInfo], vanished: list[int], floor: int) -> None:
        for uid in vanished:
            if uid in self.msgs:
                self.expunged.add(uid)
        new: list[MessageInfo] = []
        flag_changes: list[MessageInfo] = []
        last = self.uids[-1] if self.uids else 0
        for info in changed:
            if info.modseq > self.highestmodseq:
                self.highestmodseq = info.modseq
            old = self.msgs.get(info.uid)
            if old is not None:
                if old.flags != info.flags or (self.condstore and old.modseq != info.modseq):
                    flag_changes.append(info)
                self.msgs.replace(info)
            elif info.uid > last and info.uid not in vanished:
                new.append(info)
        self.highestmodseq = max(self.highestmodseq, floor)
        if new:
            self._apply_new(new)
        for info in flag_changes:
            seq = self.seq_of(info.uid)
            if not seq or info.uid in self.expunged:
                continue
            parts = [f"FLAGS {flags_text(info.flags, info.uid in self.recent)}"]
            if session.current_uid_command or self.qresync:
                parts.append(f"UID {info.uid}")
            if self.condstore:
                parts.append(f"MODSEQ ({info.modseq})")
            session.untagged(f"{seq} FETCH ({' '.join(parts)})")

    def _apply_new(self, new: list[MessageInfo]) -> None:
        """Messages above the view's last UID join it (EXISTS is sent by `sync`), \\Recent as RFC 3501 says."""
        new.sort(key=lambda m: m.uid)
        key = (self.user, self.name, self.mailbox.uidvalidity)
        mark = _RECENT_MARK.get(key, 0)
        for info in new:
            self.msgs.append(info)
            if info.uid > mark and not self.rev2:
                self.recent.add(info.uid)
        if not self.readonly:
            _RECENT_MARK[key] = max(mark, self.uids[-1])

    def _send_expunges(self, session: Session) -> None:
        gone = sorted(self.expunged)
        self.expunged.clear()
        announced: list[int] = []
        for uid in reversed(gone):
            seq = self.seq_of(uid)
            if not seq:
                continue
            self._remove(uid)
            if seq <= self._exists_sent:  # never tell of a message the client was not told exists
                self._exists_sent -= 1
                announced.append(uid)
                if not self.qresync:
                    session.untagged(f"{seq} EXPUNGE")
        if self.qresync and announced:
            session.untagged("VANISHED " + compress_uids(announced))

    def _remove(self, uid: int) -> None:
        self.msgs.remove(uid)
        self.recent.discard(uid)


def compress_uids(uids: Iterable[int]) -> str:
    """ "1,3:5,9" from a set of numbers."""
    ordered = sorted(set(uids))
    if not ordered:
        return ""
    parts = []
    start = prev = ordered[0]
    for u in ordered[1:]:
        if u == prev + 1:
            prev = u
            continue
        parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = u
    parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)
