"""imaptest script files (format: ../shared/peer-suites/imaptest/scripted_test.md): tokens, the parser of a
script (header, command groups, `*`/`!`/`?` untagged expectations, `{{{ }}}` multi-line literals, `!ifenv`)
and the mbox fixtures. Used by `tests.imaptest.runner`; keeps nothing on disk.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class ScriptFailure(AssertionError):
    pass


# --- tokens --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tok:
    kind: str  # atom, string, literal, nil
    text: str


Arg = Tok | list["Arg"]


def tokenize(data: str) -> list[Arg]:
    """IMAP arguments of a reply or of a script line (`{n}\\r\\n` literals inline); atoms keep `[...]` whole."""
    stack: list[list[Arg]] = [[]]
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c in " \r\n":
            i += 1
        elif c == "(":
            new: list[Arg] = []
            stack[-1].append(new)
            stack.append(new)
            i += 1
        elif c == ")":
            if len(stack) > 1:
                stack.pop()
            i += 1
        elif c == '"':
            out = []
            i += 1
            while i < n and data[i] != '"':
                if data[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(data[i])
                i += 1
            i += 1
            stack[-1].append(Tok("string", "".join(out)))
        elif c in "{~" and re.match(r"~?\{(\d+)\+?\}\r\n", data[i:]):
            m = re.match(r"~?\{(\d+)\+?\}\r\n", data[i:])
            assert m is not None
            size = int(m.group(1))
            start = i + m.end()
            stack[-1].append(Tok("literal", data[start : start + size]))
            i = start + size
        else:
            start = i
            while i < n and data[i] not in " ()\r\n":
                if data[i] == "[":
                    depth, j = 0, i
                    while j < n:
                        if data[j] == "[":
                            depth += 1
                        elif data[j] == "]":
                            depth -= 1
                            if depth == 0:
                                break
                        elif data[j] in "\r\n":
                            j = n
                            break
                        j += 1
                    if j < n:
                        i = j + 1
                        continue
                i += 1
            text = data[start:i]
            stack[-1].append(Tok("nil", text) if text.upper() == "NIL" else Tok("atom", text))
    return stack[0]


def render(args: list[Arg]) -> str:
    out = []
    for a in args:
        if isinstance(a, list):
            out.append("(" + render(a) + ")")
        elif a.kind == "string":
            out.append('"' + a.text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif a.kind == "literal":
            out.append("{" + str(len(a.text)) + "}" + repr(a.text[:60]))
        else:
            out.append(a.text)
    return " ".join(out)


# --- scripts -------------------------------------------------------------------------------------------


@dataclass
class Untagged:
    args: list[Arg]
    existence: str  # "*" must, "!" must not, "?" may
    line: str


@dataclass
class TestCommand:
    text: str
    reply: list[Arg] | None
    tag: int = 0
    linenum: int = 0


@dataclass
class Group:
    conn: int = 0
    commands: list[TestCommand] = field(default_factory=list)
    untagged: list[Untagged] = field(default_factory=list)
    pending: int = 0
    ordered: bool = False


@dataclass
class Script:
    name: str
    path: Path
    mbox: Path
    capabilities: list[str] = field(default_factory=list)
    connections: int = 1
    messages: int | None = 0  # None: all
    state: str = "selected"
    ignore_extra_untagged: bool = True
    users: dict[int, str] = field(default_factory=dict)  # connection index -> "$user2" style login
    groups: list[Group] = field(default_factory=list)


def _reply_of(text: str) -> tuple[list[Arg] | None, int, str]:
    """("ok"...) prefix of a line: the expected reply, the tagN number, the rest."""
    tag = 0
    word, _, rest = text.partition(" ")
    m = re.fullmatch(r"(?i)tag(\d+)", word)
    if m and int(m.group(1)) > 0 and rest:
        tag = int(m.group(1))
        text = rest
        word, _, rest = text.partition(" ")
    low = word.lower()
    if low in ("ok", "no", "bad", '""'):
        status = "" if low == '""' else low
        return [Tok("atom", status), *tokenize(rest)], tag, rest
    return None, tag, text


def load_script(path: Path) -> Script:
    mbox = path.with_name(path.name + ".mbox")
    script = Script(path.name, path, mbox if mbox.exists() else path.with_name("default.mbox"))
    lines = path.read_bytes().decode("latin-1").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = True
    skip_stack: list[tuple[bool, bool]] = []
    skip = False
    group: Group | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        linenum = i + 1
        i += 1
        if not line:
            header = False
            continue
        if line.startswith("#"):
            continue
        if line.endswith("{{{"):
            binary = line.endswith("~{{{")
            prefix = line[: -4 if binary else -3]
            while True:
                body: list[str] = []
                while i < len(lines) and not lines[i].startswith("}}}"):
                    body.append(lines[i])
                    i += 1
                if i >= len(lines):
                    raise ScriptFailure(f"{path.name}: unterminated {{{{{{ at line {linenum}")
                # binary blocks keep each line's own end (CR LF or bare LF); others end lines with CR LF
                content = "\n".join(body) if binary else "\r\n".join(b.removesuffix("\r") for b in body)
                prefix += ("~" if binary else "") + "{" + str(len(content)) + "}\r\n" + content
                after = lines[i][3:]
                i += 1
                if after.endswith("{{{"):
                    binary = after.endswith("~{{{")
                    prefix += after[: -4 if binary else -3]
                    continue
                line = prefix + after
                break
        if header:
            key, _, value = line.partition(":")
            key, value = key.strip().lower(), value.strip()
            if key == "capabilities":
                script.capabilities = value.split()
            elif key == "connections":
                script.connections = int(value)
            elif key == "messages":
                script.messages = None if value == "all" else int(value)
            elif key == "state":
                script.state = value.lower()
            elif re.fullmatch(r"user \d+", key):
                script.users[int(key.split()[1]) - 1] = value
            elif key == "ignore_extra_untagged":
                script.ignore_extra_untagged = value.startswith("y")
            else:
                raise ScriptFailure(f"{path.name}:{linenum}: unknown header {key}")
            continue
        if line.startswith(("!ifenv ", "!ifnenv ")):
            env = line.split(" ", 1)[1]
            have = os.environ.get(env) is not None
            if line.startswith("!ifnenv "):
                have = not have
            skip_stack.append((skip, False))
            skip = skip or not have
            continue
        if line == "!else":
            outer, _ = skip_stack[-1]
            skip_stack[-1] = (outer, True)
            if not outer:
                skip = not skip
            continue
        if line == "!endif":
            skip = skip_stack.pop()[0]
            continue
        if skip:
            continue
        if group is not None:
            if line.startswith(("!sleep ", "!output ")):
                continue
            if line == "!ordered":
                group.ordered = True
                continue
            if line[:2] in ("* ", "! ", "? "):
                group.untagged.append(Untagged(tokenize(line[2:]), line[0], line))
                continue
            if group.pending > 0:
                rest = line
                m = re.match(r"(\d+) (.*)", rest)
                if script.connections > 1 and m:
                    rest = m.group(2)
                reply, tag, _ = _reply_of(rest)
                if reply is not None:
                    for cmd in group.commands:
                        if cmd.tag == tag and cmd.reply is None:
                            cmd.reply = reply
                            group.pending -= 1
                            break
                    else:
                        raise ScriptFailure(f"{path.name}:{linenum}: reply for unknown tag")
                    continue
        if group is None or group.pending == 0:
            group = Group()
            script.groups.append(group)
        text = line
        if script.connections > 1:
            m = re.match(r"(\d+) ?(.*)", text, re.S)
            if not m:
                raise ScriptFailure(f"{path.name}:{linenum}: missing connection number")
            group.conn = int(m.group(1)) - 1
            text = m.group(2)
        reply, tag, text = _reply_of(text)
        if reply is not None:
            reply = reply[:1]  # method 1: only the status is expected
        if not group.commands and text[:2] in ("* ", "! ", "? "):
            group.untagged.append(Untagged(tokenize(text[2:]), text[0], text))  # banner check
            continue
        if reply is None:
            group.pending += 1
        group.commands.append(TestCommand(text, reply, tag, linenum))
    if not any(c.text.lower() == "logout" for g in script.groups for c in g.commands):
        script.groups.append(Group(0, [TestCommand("logout", [Tok("atom", "ok")])]))
    return script


def read_mbox(path: Path) -> list[tuple[bytes, str | None]]:
    """Messages of an mbox (CRLF line ends) with their From-line date as an IMAP date-time."""
    out: list[tuple[bytes, str | None]] = []
    current: list[bytes] | None = None
    date: str | None = None
    for raw in path.read_bytes().split(b"\n"):
        if raw.startswith(b"From ") and (current is None or current):
            if current:
                out.append((b"\r\n".join(current) + b"\r\n", date))
            current = []
            date = _from_date(raw.decode("latin-1"))
            continue
        if current is not None:
            current.append(raw.rstrip(b"\r"))
    if current:
        while current and current[-1] == b"":
            current.pop()
            break
        out.append((b"\r\n".join(current) + b"\r\n", date))
    return out


def _from_date(line: str) -> str | None:
    m = re.search(r"(\w{3}) +(\d{1,2}) (\d\d:\d\d:\d\d) (\d{4})(?: ([+-]\d{4}))?", line)
    if not m:
        return None
    try:
        datetime.strptime(f"{m.group(2)} {m.group(1)} {m.group(4)}", "%d %b %Y")
    except ValueError:
        return None
    return f"{int(m.group(2)):02d}-{m.group(1)}-{m.group(4)} {m.group(3)} {m.group(5) or '+0000'}"
