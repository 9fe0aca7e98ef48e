"""Edits of hand-written config files that keep their comments, blank lines and order: the `domains` list of
`kinmail.toml`, lines of `users`, entries of `aliases`. Pure text-to-text functions, plus `edit_lock` (one
editor at a time per config folder), `read_text` and `notify_server` (SIGHUP to a running server).

Called by `kinmail domain|user|alias ...` (`kinmail.cli.accounts_cmd`, which checks the edited text and writes
it atomically). Writes nothing itself but the lock file `.kinmail-edit.lock` beside kinmail.toml; reads the pid
file `data_dir/state/kinmail.pid`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from kinmail.config.aliases import alias_key
from kinmail.config.load import LoadedConfig
from kinmail.config.reference import toml_value
from kinmail.config.users import canonical_address
from kinmail.core.errors import UsageError

LOCK_NAME = ".kinmail-edit.lock"

# --- kinmail.toml: the top-level `domains` array -----------------------------------------------------------


def _value_end(text: str, start: int) -> int:
    """Index just past the TOML value starting at `start` (a string, an array that may span lines, or a bare
    word), skipping comments inside arrays."""
    depth = 0
    pos = start
    while pos < len(text):
        char = text[pos]
        if char in "\"'":
            triple = text[pos : pos + 3] == char * 3
            quote = char * 3 if triple else char
            pos += len(quote)
            while pos < len(text) and not text.startswith(quote, pos):
                pos += 2 if (char == '"' and text[pos] == "\\") else 1
            pos += len(quote)
            if depth == 0:
                return pos
            continue
        if char == "#" and depth > 0:
            newline = text.find("\n", pos)
            pos = len(text) if newline < 0 else newline
            continue
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return pos + 1
        elif depth == 0 and char in "\n#":
            return pos
        pos += 1
    return pos


def set_domains(text: str, domains: list[str]) -> str:
    """`text` with its top-level `domains = [...]` replaced (or added before the first table)."""
    new = f"domains = {toml_value(domains)}"
    offset = 0
    insert_at: int | None = None
    for line in text.splitlines(keepends=True):
        stripped = line.lstrip()
        if stripped.startswith("["):
            insert_at = offset
            break
        key, eq, _rest = stripped.partition("=")
        if eq and key.strip() in ("domains", '"domains"'):
            value_start = offset + len(line) - len(stripped) + len(key) + 1
            while value_start < len(text) and text[value_start] in " \t":
                value_start += 1
            end = _value_end(text, value_start)
            return text[:offset] + new + text[end:]
        offset += len(line)
    if insert_at is None:
        if text and not text.endswith("\n"):
            text += "\n"
        return text + new + "\n"
    return text[:insert_at] + new + "\n\n" + text[insert_at:]


# --- users ------------------------------------------------------------------------------------------------


def _user_of(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or ":" not in stripped:
        return None
    return canonical_address(stripped.split(":", 1)[0])


def add_user(text: str, line: str) -> str:
    if text and not text.endswith("\n"):
        text += "\n"
    return text + line + "\n"


def replace_user_field(text: str, address: str, index: int, value: str) -> str:
    """Set field `index` (1: password) of `address`'s line, keeping the rest of the line."""
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines):
        if _user_of(line) == address:
            body = line.rstrip("\r\n")
            ending = line[len(body) :]
            fields = body.split(":")
            while len(fields) <= index:
                fields.append("")
            fields[index] = value
            lines[number] = ":".join(fields) + ending
            return "".join(lines)
    raise UsageError(f"no such user: {address}")


def set_user_extra(text: str, address: str, key: str, value: str | None) -> str:
    """Set (or with None remove) `key=value` among the extra fields of `address`'s line."""
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines):
        if _user_of(line) != address:
            continue
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        fields = body.split(":")
        if len(fields) >= 8 and "=" not in fields[2]:  # Dovecot's long form: extras from field 8 on
            head, extra = fields[:7], ":".join(fields[7:])
        else:
            head, extra = fields[:2], ":".join(fields[2:])
        items = [item for item in extra.split() if item.partition("=")[0] != key]
        if value is not None:
            items.append(f"{key}={value}")
        new = ":".join(head)
        if items or len(head) > 2:
            new += ":" + " ".join(items)
        lines[number] = new + ending
        return "".join(lines)
    raise UsageError(f"no such user: {address}")


def remove_user(text: str, address: str) -> str:
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if _user_of(line) != address]
    if len(kept) == len(lines):
        raise UsageError(f"no such user: {address}")
    return "".join(kept)


# --- aliases ----------------------------------------------------------------------------------------------


def _alias_spans(lines: list[str]) -> list[tuple[int, int, str]]:
    """(first, last+1, source) of each logical line (continuations included)."""
    spans: list[tuple[int, int, str]] = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace() and spans:
            first, _end, source = spans[-1]
            spans[-1] = (first, number + 1, source)
            continue
        spans.append((number, number + 1, alias_key(stripped.split(None, 1)[0])))
    return spans


def alias_line(source: str, targets: list[str]) -> str:
    return f"{source} {', '.join(targets)}\n"


def set_alias(text: str, source: str, targets: list[str]) -> str:
    """Replace the entry for `source` (in place) or append it."""
    lines = text.splitlines(keepends=True)
    for first, end, found in _alias_spans(lines):
        if found == source:
            return "".join(lines[:first]) + alias_line(source, targets) + "".join(lines[end:])
    if text and not text.endswith("\n"):
        text += "\n"
    return text + alias_line(source, targets)


def remove_alias(text: str, source: str) -> str:
    lines = text.splitlines(keepends=True)
    for first, end, found in _alias_spans(lines):
        if found == source:
            return "".join(lines[:first]) + "".join(lines[end:])
    raise UsageError(f"no such alias: {source}")


# --- one editor at a time -----------------------------------------------------------------------------------


@contextlib.contextmanager
def edit_lock(config_path: Path) -> Iterator[None]:
    """Hold an exclusive lock (`.kinmail-edit.lock` beside kinmail.toml) so that two commands editing at the
    same time cannot lose each other's change."""
    lock_path = config_path.absolute().parent / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield  # a read-only config folder: the edit itself will fail with a clear message
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- reload -----------------------------------------------------------------------------------------------


def notify_server(loaded: LoadedConfig) -> int | None:
    """SIGHUP to the server whose pid is in `data_dir/state/kinmail.pid`; the pid, or None when none runs."""
    pid_path = loaded.data_dir / "state" / "kinmail.pid"
    try:
        pid = int(pid_path.read_text().strip())
        if pid <= 1 or not _is_kinmail(pid):
            return None
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return None
    return pid


def _is_kinmail(pid: int) -> bool:
    """Whether `pid` runs kinmail: a stale pid file may name a process that took the number over since, and a
    SIGHUP would end it. Where /proc is missing, the pid file is trusted."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    return b"kinmail" in cmdline


def read_text(path: Path, missing_ok: bool = True) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return ""
        raise UsageError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
