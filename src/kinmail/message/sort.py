"""SORT (RFC 5256 §3, RFC 5957 SORT=DISPLAY) and the base subject of RFC 5256 §2.1.

The IMAP server builds one `SortItem` per message in the search result and calls `sort_ids`; THREAD
(`kinmail.message.thread`) uses `base_subject` and `sent_timestamp` too. Strings compare with the
i;unicode-casemap collation (RFC 5051). Pure; nothing is kept on disk.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from kinmail.message.address import Address, parse_addresses
from kinmail.message.headers import decode_bytes, decode_words, parse_date, timestamp
from kinmail.message.mime import Message

__all__ = ["SORT_KEYS", "SortItem", "base_subject", "casemap", "sort_ids"]

SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"})


def casemap(text: str) -> str:
    """RFC 5051 i;unicode-casemap: titlecase each character, then canonical decomposition."""
    if text.isascii():
        return text.upper()
    return unicodedata.normalize("NFD", "".join(c.title() for c in text))


# --- RFC 5256 §2.1 base subject -------------------------------------------------------------------------

_WSP_RUN = re.compile(r"[ \t\r\n]+")
_TRAILER = re.compile(r"(?:[ \t]|\(fwd\))+$", re.I)
_BLOB = r"\[[^\[\]]*\][ \t]*"
_REFWD = r"(?:re|fwd?)[ \t]*(?:" + _BLOB + r")?:"
_LEADER = re.compile(r"^(?:(?:" + _BLOB + r")*" + _REFWD + r"|[ \t]+)", re.I)
_LEADING_BLOB = re.compile(r"^" + _BLOB)
_FWD_HDR = re.compile(r"^\[fwd:(.*)\]$", re.I | re.S)


def base_subject(subject: str) -> tuple[str, bool]:
    """RFC 5256 §2.1: the base subject of a (decoded) Subject, and whether it was a reply or forward
    (a subj-refwd, a "(fwd)" trailer or a "[fwd: ...]" wrapper was removed). Not yet case-mapped."""
    s = _WSP_RUN.sub(" ", subject)  # (1) encoded words are already decoded by the caller
    is_reply = False
    while True:
        # (2) subj-trailer
        new = _TRAILER.sub("", s)
        if "(fwd)" in s[len(new) :].lower():
            is_reply = True
        s = new
        while True:
            # (3) subj-leader, repeatedly
            m = _LEADER.match(s)
            if m and m.end() > 0:
                if m.group().strip():
                    is_reply = True
                s = s[m.end() :]
                continue
            # (4) a leading subj-blob, when something remains after it
            m = _LEADING_BLOB.match(s)
            if m and s[m.end() :]:
                s = s[m.end() :]
                continue
            break
        # (6) subj-fwd-hdr and subj-fwd-trl
        m = _FWD_HDR.match(s)
        if m:
            s = m.group(1)
            is_reply = True
            continue
        return s, is_reply


def decoded_subject(message: Message) -> str:
    value = message.header.value("subject")
    return "" if value is None else decode_words(decode_bytes(value))


def sent_timestamp(message: Message, internaldate: float) -> float:
    """RFC 5256 §3 DATE: the Date: field in UTC, or the INTERNALDATE when it is missing or unparseable."""
    dt = parse_date(message.header.value("date"))
    if dt is None:
        return internaldate
    try:
        return timestamp(dt)
    except (OverflowError, ValueError):
        return internaldate


def _first_address(message: Message, name: str) -> Address | None:
    addresses = parse_addresses(message.header.value(name))
    return addresses[0] if addresses else None


def _mailbox_key(message: Message, name: str) -> str:
    """RFC 5256 FROM/TO/CC: the addr-mailbox of the first address (a group's name for a group)."""
    a = _first_address(message, name)
    if a is None or a.mailbox is None:
        return ""
    return casemap(decode_bytes(a.mailbox))


def _display_key(message: Message, name: str) -> str:
    """RFC 5957 §3 DISPLAYFROM/DISPLAYTO: the display name of the first address, else its addr-spec (a
    group's display name is its name)."""
    a = _first_address(message, name)
    if a is None:
        return ""
    if a.is_group_start:
        return casemap(decode_words(decode_bytes(a.mailbox or b"")))
    text = a.display_name.strip() or a.addr_spec
    return casemap(text)


@dataclass
class SortItem:
    """One message to sort: `id` is what is returned (sequence number or UID); `seq` orders ties."""

    id: int
    seq: int
    size: int
    internaldate: float
    message: Message
    _keys: dict[str, object] = field(default_factory=dict, repr=False)

    @cached_property
    def sent(self) -> float:
        return sent_timestamp(self.message, self.internaldate)

    @cached_property
    def subject_key(self) -> str:
        return casemap(base_subject(decoded_subject(self.message))[0])

    def key(self, name: str) -> object:
        found = self._keys.get(name)
        if found is None:
            found = _KEY_FUNCS[name](self)
            self._keys[name] = found
        return found


_KEY_FUNCS: dict[str, Callable[[SortItem], object]] = {
    "ARRIVAL": lambda it: it.internaldate,
    "CC": lambda it: _mailbox_key(it.message, "cc"),
    "DATE": lambda it: it.sent,
    "FROM": lambda it: _mailbox_key(it.message, "from"),
    "SIZE": lambda it: it.size,
    "SUBJECT": lambda it: it.subject_key,
    "TO": lambda it: _mailbox_key(it.message, "to"),
    "DISPLAYFROM": lambda it: _display_key(it.message, "from"),
    "DISPLAYTO": lambda it: _display_key(it.message, "to"),
}


def parse_criteria(criteria: Sequence[str]) -> list[tuple[str, bool]]:
    """`["REVERSE", "DATE", "SUBJECT"]` → `[("DATE", True), ("SUBJECT", False)]`; ValueError when bad."""
    out: list[tuple[str, bool]] = []
    reverse = False
    for word in criteria:
        up = word.upper()
        if up == "REVERSE":
            if reverse:
                raise ValueError("REVERSE twice")
            reverse = True
            continue
        if up not in SORT_KEYS:
            raise ValueError(f"unknown sort key {word}")
        out.append((up, reverse))
        reverse = False
    if reverse or not out:
        raise ValueError("incomplete sort criteria")
    return out


def _key_of(name: str) -> Callable[[SortItem], Any]:
    return lambda it: it.key(name)


def sort_ids(items: Sequence[SortItem], criteria: Sequence[str]) -> list[int]:
    """RFC 5256 §3 SORT: order by each key in turn (REVERSE flips only the key after it); messages that
    compare equal keep mailbox order. Returns the items' ids."""
    keys = parse_criteria(criteria)
    ordered = sorted(items, key=lambda it: it.seq)
    for name, reverse in reversed(keys):  # stable sorts, least significant key first
        ordered.sort(key=_key_of(name), reverse=reverse)
    return [it.id for it in ordered]
