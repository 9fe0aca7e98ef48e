"""IMAP APPEND (RFC 9051 §6.3.12) with MULTIAPPEND (RFC 3502), APPENDUID (UIDPLUS, RFC 4315), literal8
(BINARY, RFC 3516) and CATENATE (RFC 4469, TEXT parts and IMAP URLs of this user's own messages).

The message arrives whole in the parsed command (the parser has already read its literal within
`[imap] max_literal_size`); the store writes it durably before the tagged OK. Keeps nothing on disk itself.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import unquote

from kinmail.imapserver.appendstore import store_append
from kinmail.imapserver.cmd_mailbox import mailbox_name, open_mailbox, user_mailboxes
from kinmail.imapserver.session import AUTH, Session, blocking, command
from kinmail.proto.imap_args import as_astring, as_atom, parse_datetime, parse_flags
from kinmail.proto.imap_parser import Atom, Command, ParseError, Str, Token
from kinmail.proto.imap_response import Code, ImapError, Status
from kinmail.store.errors import (
    InvalidFolderName,
    MessageGone,
    NoSuchFolder,
    QuotaExceeded,
    StoreError,
)

_URL_RE = re.compile(
    r"(?:imap://[^/]*)?/?([^;]*?)/?(?:;UIDVALIDITY=(\d+))?/;UID=(\d+)(?:/;SECTION=([^;/]*))?(?:/;PARTIAL=(\d+)(?:\.(\d+))?)?",
    re.I,
)


async def _catenate(s: Session, parts: list[Token]) -> bytes:
    out: list[bytes] = []
    i = 0
    while i + 1 < len(parts):
        kind = as_atom(parts[i], "catenate part").upper()
        value = parts[i + 1]
        i += 2
        if kind == "TEXT":
            if not isinstance(value, Str):
                raise ParseError("CATENATE TEXT needs a literal")
            out.append(value.data)
        elif kind == "URL":
            out.append(await _fetch_url(s, as_astring(value)))
        else:
            raise ParseError("Unknown CATENATE part")
    if i != len(parts):
        raise ParseError("Incomplete CATENATE list")
    return b"".join(out)


async def _fetch_url(s: Session, url: str) -> bytes:
    from kinmail.imapserver import render
    from kinmail.proto.imap_args import FetchAtt, Section

    m = _URL_RE.fullmatch(url)
    if not m:
        raise ImapError(Status.NO, "Bad or unsupported URL", "BADURL " + url)
    folder = unquote(m.group(1)) or (s.selected.name if s.selected else "")
    mailbox = await open_mailbox(s, folder)
    if m.group(2) is not None and mailbox.uidvalidity != int(m.group(2)):
        raise ImapError(Status.NO, "UIDVALIDITY mismatch", "BADURL " + url)
    try:
        raw = await blocking(mailbox.read, int(m.group(3)))
    except MessageGone as exc:
        raise ImapError(Status.NO, "No such message", "BADURL " + url) from exc
    section = m.group(4)
    if m.group(5) is not None:
        raw = await _fetch_url(s, url[: m.start(5) - len("/;PARTIAL=")]) if section else raw
        start = int(m.group(5))
        return raw[start : start + int(m.group(6))] if m.group(6) else raw[start:]
    if not section:
        return raw
    parts = section.upper().split(".")
    nums = tuple(int(p) for p in parts if p.isdigit())
    text = ".".join(p for p in parts if not p.isdigit())
    rendered = render.section_of(render.Rendered(raw), FetchAtt("BODY.PEEK", Section(nums, text), None, True))
    if rendered == b"NIL":
        raise ImapError(Status.NO, "No such section", "BADURL " + url)
    return rendered.split(b"}\r\n", 1)[1] if rendered.startswith(b"{") else rendered


_CTE_FIELD = re.compile(rb"(?im)^content-transfer-encoding:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*\r?\n")


def encode_binary_parts(data: bytes) -> bytes:
    """RFC 3516 §4.4: a message APPENDed as literal8 may hold binary parts; store them base64-encoded so that
    every line is text (BINARY[] fetches decode them back). Parts are rewritten from the end, so the earlier
    offsets stay valid."""
    from kinmail.message.mime import Message

    message = Message(data)
    leaves = [p for p in message.root.walk() if not p.is_multipart and p.message is None and p is not None]
    targets = [p for p in leaves if p.cte.lower() == "binary" or b"\x00" in p.body]
    if not targets:
        return data
    out = data
    for part in sorted(targets, key=lambda p: p.start, reverse=True):
        header = _CTE_FIELD.sub(b"", part.header_bytes)
        blank = b"\r\n" if header.endswith(b"\r\n\r\n") or header == b"\r\n" else b""
        head = header[: len(header) - len(blank)] if blank else header
        encoded = base64.encodebytes(part.body).replace(b"\n", b"\r\n")
        new = head + b"Content-Transfer-Encoding: base64\r\n" + (blank or b"\r\n") + encoded
        out = out[: part.start] + new + out[part.end :]
    return out


@command("APPEND", AUTH)
async def cmd_append(s: Session, cmd: Command) -> None:
    if len(cmd.args) < 2:
        raise ParseError("APPEND takes a mailbox and a message")
    name = mailbox_name(s, cmd.args[0])
    messages: list[tuple[list[str], float | None, bytes]] = []
    mailboxes = user_mailboxes(s)
    if not mailboxes.known(name):  # the error for a missing folder comes before any about the messages
        try:
            await open_mailbox(s, name, scan=False)
        except ImapError as exc:
            raise ImapError(Status.NO, "Mailbox does not exist", Code.TRYCREATE) from exc
    rest = list(cmd.args[1:])
    while rest:
        flags: list[str] = []
        date: float | None = None
        if isinstance(rest[0], list):
            flags = parse_flags(rest.pop(0))
        if rest and isinstance(rest[0], Str) and not rest[0].literal:
            date = parse_datetime(rest.pop(0))
        if not rest:
            raise ParseError("Missing message literal")
        item = rest.pop(0)
        if isinstance(item, Str):
            data = item.data
            if item.literal8:
                data = await blocking(encode_binary_parts, data)
            elif b"\x00" in data:
                raise ImapError(Status.NO, "NUL in message; use literal8", Code.UNKNOWN_CTE)
        elif (
            isinstance(item, Atom)
            and item.upper == "UTF8"
            and rest
            and isinstance(rest[0], list)
            and len(rest[0]) == 1
            and isinstance(rest[0][0], Str)
        ):
            data = rest.pop(0)[0].data  # type: ignore[index, union-attr]  # RFC 6855 §4: UTF8 (literal8)
        elif isinstance(item, Atom) and item.upper == "CATENATE" and rest and isinstance(rest[0], list):
            data = await _catenate(s, rest.pop(0))  # type: ignore[arg-type]
        else:
            raise ParseError("Expected a message literal")
        if not data:
            raise ImapError(Status.NO, "Empty message")
        messages.append((flags, date, data))
    limit = s.rt.config.imap.max_literal_size
    if any(len(data) > limit for _flags, _date, data in messages):
        raise ImapError(Status.NO, "Message too big", Code.TOOBIG)
    try:
        mailbox, uids = await store_append(
            mailboxes,
            lambda: mailboxes.open(name, scan=False),  # no scan: APPEND only adds
            [(data, flags, date) for flags, date, data in messages],
        )
    except (NoSuchFolder, InvalidFolderName) as exc:
        raise ImapError(Status.NO, "Mailbox does not exist", Code.TRYCREATE) from exc
    except QuotaExceeded as exc:
        raise ImapError(Status.NO, "Quota exceeded", Code.OVERQUOTA) from exc
    except StoreError as exc:
        raise ImapError(Status.NO, str(exc)) from exc
    if s.selected is not None:
        if s.selected.name == mailbox.name:
            s.selected.note_own_append(uids)
        await s.sync(expunges=False)
    uid_text = ",".join(str(u) for u in uids)
    s.ok(cmd, "Append completed", f"APPENDUID {mailbox.uidvalidity} {uid_text}")
