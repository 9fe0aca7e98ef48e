"""Building messages: header folding (RFC 5322 §2.2.3) and prepending header fields.

Used by whoever writes header fields into a message (Received and Authentication-Results on delivery, DSNs,
vacation replies, the web's compose). Pure; nothing is kept on disk.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["fold_field", "prepend_fields"]


def fold_field(name: str, value: str, width: int = 78) -> bytes:
    """`Name: value` folded at blanks so that lines stay within `width` octets where the value allows
    (RFC 5322 §2.1.1, §2.2.3), with CRLF after each line. Line breaks inside `value` are turned into blanks;
    a word longer than a line is left whole."""
    words = value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").split(" ")
    lines: list[str] = []
    line = f"{name}:"
    for i, word in enumerate(words):
        candidate = f"{line} {word}"
        if i > 0 and len(candidate.encode()) > width and line.strip():
            lines.append(line)
            line = f" {word}"
        else:
            line = candidate
    lines.append(line)
    return "".join(f"{ln}\r\n" for ln in lines).encode("utf-8")


def prepend_fields(message: bytes, fields: Iterable[tuple[str, str]], width: int = 78) -> bytes:
    """The message with `fields` (name, value) added at the top of its header, in the order given."""
    return b"".join(fold_field(name, value, width) for name, value in fields) + message
