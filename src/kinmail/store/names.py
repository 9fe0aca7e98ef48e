"""Folder names: IMAP modified UTF-7 (RFC 3501 §5.1.3), validation, and the Maildir++ directory of a name.

Callers (the IMAP server decoding what a client sent, the store mapping names to directories) use
`encode_mutf7` / `decode_mutf7`, `check_name` and `folder_dir_name`. Keeps nothing on disk.

A folder's IMAP name uses `/` as the hierarchy delimiter and is handled as UTF-8 text inside kinmail. On disk,
as Dovecot's Maildir++ layout writes it, `Parent/Child` is the directory `.Parent.Child` with each part in
modified UTF-7. A `.` inside a part would create a hierarchy level on disk, so such names are refused
(`InvalidFolderName`) rather than escaped; so are empty parts, parts starting with `~`, control characters,
the LIST wildcards `*` and `%`, and names whose directory would be longer than 255 bytes.
"""

from __future__ import annotations

import base64
import binascii

from kinmail.store.errors import InvalidFolderName

DELIMITER = "/"
INBOX = "INBOX"
MAX_DIR_NAME = 255


def encode_mutf7(text: str) -> str:
    """Encode a Unicode folder name in IMAP modified UTF-7 (RFC 3501 §5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be", "surrogatepass")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mutf7(text: str) -> str:
    """Decode modified UTF-7; raise `InvalidFolderName` for anything not in its one canonical form."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if not 0x20 <= ord(ch) <= 0x7E:
            raise InvalidFolderName(f"invalid character in folder name {text!r}")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise InvalidFolderName(f"unterminated modified UTF-7 in {text!r}")
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                raw = base64.b64decode(b64, validate=True)
                decoded = raw.decode("utf-16-be")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise InvalidFolderName(f"invalid modified UTF-7 in {text!r}") from None
            out.append(decoded)
        i = end + 1
    result = "".join(out)
    if encode_mutf7(result) != text:
        raise InvalidFolderName(f"non-canonical modified UTF-7 in {text!r}")
    return result


def normalize(name: str) -> str:
    """`inbox`, `Inbox/x` → `INBOX`, `INBOX/x` (RFC 3501 §5.1: INBOX is case-insensitive)."""
    head, sep, rest = name.partition(DELIMITER)
    if head.upper() == INBOX:
        return INBOX + sep + rest
    return name


def check_name(name: str) -> str:
    """Return the normalised name, or raise `InvalidFolderName` saying why it cannot be a folder."""
    if not isinstance(name, str) or not name:
        raise InvalidFolderName("empty folder name")
    name = normalize(name)
    for ch in name:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029" or 0xD800 <= code <= 0xDFFF:
            raise InvalidFolderName("control character in folder name")
        if ch in "*%\\":
            raise InvalidFolderName(f"folder names may not contain {ch!r}")
    for part in name.split(DELIMITER):
        if not part:
            raise InvalidFolderName(f"empty part in folder name {name!r}")
        if "." in part:
            raise InvalidFolderName(f"folder names may not contain '.' ({name!r})")
        if part.startswith("~"):
            raise InvalidFolderName(f"folder name parts may not start with '~' ({name!r})")
        if part != part.strip():
            raise InvalidFolderName(f"folder name parts may not start or end with a space ({name!r})")
    if name == INBOX:
        return name
    if len(folder_dir_name(name, checked=True).encode("utf-8")) > MAX_DIR_NAME:
        raise InvalidFolderName("folder name too long")
    return name


def folder_dir_name(name: str, *, checked: bool = False) -> str:
    """The Maildir++ directory of folder `name` (`Sent` → `.Sent`, `A/B` → `.A.B`); `""` for INBOX."""
    if not checked:
        name = check_name(name)
    if name == INBOX:
        return ""
    return "." + ".".join(encode_mutf7(part) for part in name.split(DELIMITER))


def name_from_dir(dirname: str) -> str | None:
    """The folder name of a Maildir++ directory (`.A.B` → `A/B`), or None when it is not a valid folder."""
    if not dirname.startswith(".") or dirname in (".", ".."):
        return None
    try:
        parts = [decode_mutf7(part) for part in dirname[1:].split(".")]
        return check_name(DELIMITER.join(parts))
    except InvalidFolderName:
        return None


def storage_name(name: str) -> str:
    """The name as Dovecot's `subscriptions` file and Maildir++ write it: `A/B` → `A.B` in modified UTF-7."""
    return ".".join(encode_mutf7(part) for part in name.split(DELIMITER))
