"""Searchable text of a message: decoded header fields and the decoded text of its text parts.

Called by the store when a message is added (and lazily for messages found by a rebuild) to fill the FTS5
table that `Mailbox.search_text` queries (IMAP SEARCH TEXT and BODY, RFC 9051 §6.4.4). Keeps nothing on disk.
Bad MIME never raises: what cannot be decoded is indexed as it is or left out.
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import re
from email.header import decode_header, make_header
from email.message import Message

MAX_TEXT = 1_000_000
_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.S | re.I)


def squeeze(text: str) -> str:
    """Every run of white space (line ends, tabs, no-break spaces) as one space: the form of the indexed text,
    so that a phrase matches across a line break or a folded header. `str.split` does it four times as fast
    as a regular expression, and this was a third of the time spent extracting a message's text."""
    return " ".join(text.split())


def query_form(query: str) -> str:
    """A SEARCH string as the indexed text has it: runs of white space squeezed, a space at either end kept
    as one (a needle " cat" still asks for a word that begins with it)."""
    squeezed = squeeze(query)
    if query[:1].isspace():
        squeezed = " " + squeezed
    if query[-1:].isspace() and squeezed != " ":
        squeezed += " "
    return squeezed


def _decode_header(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        content = payload.decode(charset, "replace")
    except LookupError:
        content = payload.decode("utf-8", "replace")
    if part.get_content_subtype() == "html":
        content = html.unescape(_TAGS.sub(" ", content))
    return squeeze(content)


def _parse(data: bytes) -> Message:
    """The message as `BytesParser` reads it. A message of one part (no multipart or message/ type) has only
    its header parsed, and its body is set as the payload the parser would have made, undivided: the parser
    reads a body line by line, which was half the time of extracting a plain message's text."""
    parser = email.parser.BytesParser(policy=email.policy.compat32)
    end = data.find(b"\r\n\r\n")
    head = data[:end].lower() if end > 0 else b""
    if head and b"multipart/" not in head and b"message/" not in head:  # else the header would be read twice
        msg = parser.parsebytes(data[: end + 4], headersonly=True)
        if (
            not msg.defects
            and msg.get_payload() == ""
            and msg.get_content_maintype() not in ("multipart", "message")
        ):
            msg.set_payload(data[end + 4 :].decode("ascii", "surrogateescape"))
            return msg
    return parser.parsebytes(data)


def extract_text(data: bytes) -> tuple[str, str]:
    """(headers, body) text of a message for the full-text index."""
    try:
        msg = _parse(data)
    except Exception:
        text = data.decode("utf-8", "replace")
        head, _, rest = text.partition("\r\n\r\n")
        return head, rest[:MAX_TEXT]
    headers: list[str] = []
    for name, value in msg.items():
        try:
            headers.append(f"{name}: {squeeze(_decode_header(str(value)))}")
        except Exception:
            continue
    body: list[str] = []
    size = 0
    try:
        parts = list(msg.walk())
    except Exception:
        parts = []
    for part in parts:
        if size > MAX_TEXT:
            break
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if part.get_content_disposition() == "attachment" and part.get_content_subtype() != "plain":
            continue
        try:
            text = _part_text(part)
        except Exception:
            continue
        body.append(text)
        size += len(text)
    return "\n".join(headers), "\n".join(body)[:MAX_TEXT]
