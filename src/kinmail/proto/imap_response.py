"""IMAP response encoding (RFC 9051 §7, §9 formal syntax): strings, literals, lists and status replies.

Sans-I/O: everything returns bytes for the server to write. `ImapError` is the exception a command raises for
a client-caused failure; it renders its own tagged NO/BAD reply, with a response code when it has one.
Nothing is kept on disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Code",
    "ImapError",
    "Status",
    "astring",
    "encode_list",
    "literal",
    "nstring",
    "quoted",
    "string",
    "tagged",
    "untagged",
]

_ATOM_SAFE = re.compile(rb"[!#$&'+,\-./0-9:;<=>?@A-Z^_`a-z|}~\x5b]+")
_QUOTE_SAFE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")


class Status(StrEnum):
    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    BYE = "BYE"
    PREAUTH = "PREAUTH"


class Code(StrEnum):
    """Response codes (RFC 9051 §7.1 and the extensions') used by the server."""

    ALERT = "ALERT"
    ALREADYEXISTS = "ALREADYEXISTS"
    AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"
    CANNOT = "CANNOT"
    CLIENTBUG = "CLIENTBUG"
    CLOSED = "CLOSED"
    CONTACTADMIN = "CONTACTADMIN"
    EXPUNGEISSUEDBY = "EXPUNGEISSUED"
    INUSE = "INUSE"
    LIMIT = "LIMIT"
    NONEXISTENT = "NONEXISTENT"
    NOPERM = "NOPERM"
    OVERQUOTA = "OVERQUOTA"
    PARSE = "PARSE"
    PRIVACYREQUIRED = "PRIVACYREQUIRED"
    READ_ONLY = "READ-ONLY"
    READ_WRITE = "READ-WRITE"
    SERVERBUG = "SERVERBUG"
    TOOBIG = "TOOBIG"
    TRYCREATE = "TRYCREATE"
    UNAVAILABLE = "UNAVAILABLE"
    UNKNOWN_CTE = "UNKNOWN-CTE"
    BADCHARSET = "BADCHARSET"


@dataclass
class ImapError(Exception):
    """A command failed because of the client or the state of the mailbox; rendered as a tagged reply."""

    status: Status
    text: str
    code: str | None = None

    def render(self, tag: str) -> bytes:
        return tagged(tag, self.status, self.text, self.code)

    def __str__(self) -> str:
        return f"{self.status} {self.text}"


def no(text: str, code: str | None = None) -> ImapError:
    return ImapError(Status.NO, text, code)


def bad(text: str, code: str | None = None) -> ImapError:
    return ImapError(Status.BAD, text, code)


def tagged(tag: str, status: Status | str, text: str, code: str | None = None) -> bytes:
    middle = f"[{code}] " if code else ""
    return f"{tag} {status} {middle}{text}\r\n".encode()


def untagged(text: str | bytes) -> bytes:
    if isinstance(text, str):
        text = text.encode()
    return b"* " + text + b"\r\n"


def quoted(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(data: bytes, binary: bool = False) -> bytes:
    return (b"~{" if binary else b"{") + str(len(data)).encode() + b"}\r\n" + data


def string(value: str | bytes) -> bytes:
    """A quoted string when it can be one, else a literal."""
    data = value.encode() if isinstance(value, str) else value
    if len(data) < 1024 and _QUOTE_SAFE.fullmatch(data):
        return quoted(data)
    return literal(data)


def nstring(value: str | bytes | None) -> bytes:
    return b"NIL" if value is None else string(value)


def astring(value: str | bytes) -> bytes:
    """An atom when safe (not NIL), else a string."""
    data = value.encode() if isinstance(value, str) else value
    if data and _ATOM_SAFE.fullmatch(data) and data.upper() != b"NIL" and b"[" not in data:
        return data
    return string(data)


def encode_list(items: Iterable[bytes | str]) -> bytes:
    return b"(" + b" ".join(i.encode() if isinstance(i, str) else i for i in items) + b")"
