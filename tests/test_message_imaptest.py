"""The message layer against Dovecot's imaptest scripts (../shared/peer-suites/imaptest/tests): for every
fetch-*, search-*, sort-* and thread* script, the FETCH items, SEARCH keys, SORT and THREAD responses that
`kinmail.message` computes are rendered as the server sends them and matched against the script's expected
untagged responses, with imaptest's matching rules (case-insensitive, `$var` binding, FETCH items unordered).

The messages come from the script's .mbox, read the way imaptest reads it (every line up to the next
`From ` line, CRLF line ends). Commands outside the message layer (SELECT, STATUS, UID...) are skipped;
STORE \\Deleted + EXPUNGE and APPEND are simulated so that the THREAD scripts run whole.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kinmail.message import (
    Message,
    SortItem,
    binary_bytes,
    bodystructure,
    envelope,
    header_contains,
    message_sent_date,
    partial,
    render_threads,
    section_bytes,
    sort_ids,
    text_contains,
    thread_ids,
)

SUITE = Path(__file__).resolve().parents[2] / "shared" / "peer-suites" / "imaptest" / "tests"
_FROM_LINE = re.compile(rb"^From \S+ +(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})(?: ([+-]\d{4}))?\s*$")


@dataclass
class MboxMessage:
    raw: bytes
    internaldate: float


def read_mbox(path: Path) -> list[MboxMessage]:
    """imaptest's mailbox-source-mbox.c: a message is every line after a From line up to the next one."""
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out: list[MboxMessage] = []
    body: list[bytes] | None = None
    stamp = 0.0
    for line in lines:
        m = _FROM_LINE.match(line)
        if m and (body is None or body):
            if body is not None:
                out.append(MboxMessage(b"".join(x + b"\r\n" for x in body), stamp))
            t = calendar.timegm(time.strptime(m.group(1).decode(), "%a %b %d %H:%M:%S %Y"))
            tz = m.group(2)
            if tz:
                sign = -1 if tz[:1] == b"-" else 1
                t -= sign * (int(tz[1:3]) * 3600 + int(tz[3:5]) * 60)
            stamp = float(t)
            body = []
            continue
        assert body is not None, f"{path}: no From line first"
        body.append(line.rstrip(b"\r"))
    if body:
        out.append(MboxMessage(b"".join(x + b"\r\n" for x in body), stamp))
    return out


# --- a small IMAP argument reader, the same for the scripts' expectations and our own responses ----------


@dataclass
class Lit:
    """A string (quoted or literal)."""

    data: bytes


def parse_args(s: bytes) -> list[object]:
    pos = 0

    def parse_list(end: bytes | None) -> list[object]:
        nonlocal pos
        items: list[object] = []
        while pos < len(s):
            c = s[pos : pos + 1]
            if c == b" ":
                pos += 1
            elif end is not None and c == end:
                pos += 1
                return items
            elif c == b"(":
                pos += 1
                items.append(parse_list(b")"))
            elif c == b'"':
                pos += 1
                buf = bytearray()
                while s[pos : pos + 1] != b'"':
                    if s[pos : pos + 1] == b"\\":
                        pos += 1
                    buf += s[pos : pos + 1]
                    pos += 1
                pos += 1
                items.append(Lit(bytes(buf)))
            elif c in (b"{", b"~") and re.match(rb"~?\{\d+\}\r\n", s[pos:]):
                m = re.match(rb"~?\{(\d+)\}\r\n", s[pos:])
                assert m is not None
                pos += m.end()
                n = int(m.group(1))
                items.append(Lit(s[pos : pos + n]))
                pos += n
            else:
                start = pos
                depth = 0
                while pos < len(s):
                    ch = s[pos : pos + 1]
                    if ch == b"[":
                        depth += 1
                    elif ch == b"]":
                        depth -= 1
                    elif depth == 0 and ch in (b" ", b"(", b")"):
                        break
                    pos += 1
                items.append(s[start:pos].decode())
        return items

    return parse_list(None)


def _norm_key(key: str) -> str:
    return re.sub(r"\s+", " ", key.upper().replace(".PEEK", ""))


class Mismatch(Exception):
    pass


def match(expected: object, actual: object, env: dict[str, object], fetch_list: bool = False) -> None:
    if isinstance(expected, str) and expected.startswith("$") and not expected.startswith("$!"):
        name = expected[1:].strip("{}")
        if not name:
            return
        if name in env:
            match(env[name], actual, env)
        else:
            env[name] = actual
        return
    if isinstance(expected, list):
        if not isinstance(actual, list):
            raise Mismatch(f"{expected!r} != {actual!r}")
        expected = [e for e in expected if not (isinstance(e, str) and e.startswith("$!"))]
        if fetch_list:
            pairs = {_norm_key(str(actual[i])): actual[i + 1] for i in range(0, len(actual) - 1, 2)}
            for i in range(0, len(expected) - 1, 2):
                key = _norm_key(str(expected[i]))
                if key in ("FLAGS", "UID", "INTERNALDATE"):
                    continue
                if key not in pairs:
                    raise Mismatch(f"missing {key} in {actual!r}")
                match(expected[i + 1], pairs[key], env)
            return
        if len(expected) != len(actual):
            raise Mismatch(f"{expected!r} != {actual!r}")
        for e, a in zip(expected, actual, strict=True):
            match(e, a, env)
        return
    if isinstance(expected, Lit):
        if not isinstance(actual, Lit) or expected.data.lower() != actual.data.lower():
            raise Mismatch(f"{expected!r} != {actual!r}")
        return
    if isinstance(expected, str):
        if not isinstance(actual, str) or expected.lower() != actual.lower():
            raise Mismatch(f"{expected!r} != {actual!r}")
        return
    raise Mismatch(f"unexpected {expected!r}")


# --- the script runner -----------------------------------------------------------------------------------


@dataclass
class Step:
    command: str
    expect: list[tuple[str, bytes]] = field(default_factory=list)  # ("*" or "!", response)


def read_script(path: Path) -> tuple[dict[str, str], list[Step]]:
    data = path.read_bytes()
    head, _, rest = data.partition(b"\n\n")
    headers = {}
    for header_line in head.decode().splitlines():
        k, _, v = header_line.partition(":")
        headers[k.strip().lower()] = v.strip()
    lines = rest.split(b"\n")
    steps: list[Step] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        while line.endswith(b"{{{"):  # multi-line literal (imaptest test-parser.c)
            binary = line.endswith(b"~{{{")
            prefix = line[: -4 if binary else -3]
            chunks: list[bytes] = []
            while not lines[i].startswith(b"}}}"):
                chunks.append(lines[i])
                i += 1
            content = (b"\n" if binary else b"\r\n").join(chunks)
            line = prefix + b"{%d}\r\n" % len(content) + content + lines[i][3:]
            i += 1
        if not line.strip() or line.startswith(b"#"):
            continue
        if line[:2] in (b"* ", b"! ", b"? "):
            steps[-1].expect.append((line[:1].decode(), line[2:]))
            continue
        steps.append(Step(line.decode("utf-8", "replace")))
    return headers, steps


@dataclass
class Box:
    source: list[MboxMessage]
    messages: list[MboxMessage] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)
    next_append: int = 0

    def append(self) -> None:
        self.messages.append(self.source[self.next_append % len(self.source)])
        self.next_append += 1


def seqset(text: str, count: int) -> list[int]:
    out: list[int] = []
    for piece in text.split(","):
        a, _, b = piece.partition(":")
        lo = count if a == "*" else int(a)
        hi = lo if not b else (count if b == "*" else int(b))
        lo, hi = min(lo, hi), max(lo, hi)
        out.extend(n for n in range(lo, hi + 1) if n not in out and 1 <= n <= count)
    return sorted(out)


_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}


def _search_date(text: str) -> tuple[int, int, int]:
    d, m, y = text.split("-")
    return int(y), _MONTHS[m.lower()], int(d)


def search(box: Box, args: list[object]) -> list[int]:
    msgs = [Message(m.raw) for m in box.messages]

    def _eval(a: list[object], pos: int, seq: int) -> tuple[bool, int]:
        key = a[pos]
        msg = msgs[seq - 1]
        if isinstance(key, list):
            ok = True
            p = 0
            while p < len(key):
                r, p = _eval(key, p, seq)
                ok = ok and r
            return ok, pos + 1
        assert isinstance(key, str)
        k = key.upper()

        def arg(i: int) -> str:
            v = a[pos + i]
            return v.data.decode() if isinstance(v, Lit) else str(v)

        if k == "ALL":
            return True, pos + 1
        if k == "NOT":
            r, p = _eval(a, pos + 1, seq)
            return not r, p
        if k == "OR":
            r1, p = _eval(a, pos + 1, seq)
            r2, p = _eval(a, p, seq)
            return r1 or r2, p
        if k in ("SUBJECT", "FROM", "TO", "CC", "BCC"):
            return header_contains(msg, k.lower(), arg(1)), pos + 2
        if k == "HEADER":
            return header_contains(msg, arg(1), arg(2)), pos + 3
        if k in ("BODY", "TEXT"):
            return text_contains(msg, arg(1), with_headers=k == "TEXT"), pos + 2
        if k in ("SMALLER", "LARGER"):
            n = int(arg(1))
            return (msg.size < n if k == "SMALLER" else msg.size > n), pos + 2
        if k.startswith("SENT"):
            want = _search_date(arg(1))
            got = message_sent_date(msg)
            assert got is not None
            have = (got.year, got.month, got.day)
            r = {"SENTBEFORE": have < want, "SENTON": have == want, "SENTSINCE": have >= want}[k]
            return r, pos + 2
        if re.fullmatch(r"[\d*:,]+", k):
            return seq in seqset(k, len(msgs)), pos + 1
        raise AssertionError(f"search key {k} not handled by the test runner")

    hits = []
    for seq in range(1, len(msgs) + 1):
        ok = True
        p = 0
        while p < len(args):
            r, p = _eval(args, p, seq)
            ok = ok and r
        if ok:
            hits.append(seq)
    return hits


def lit(data: bytes) -> bytes:
    return b"{%d}\r\n%s" % (len(data), data)


def fetch_item(msg: Message, raw_item: str) -> list[bytes]:
    """Render one FETCH item as `NAME value` (bytes), or [] for items outside the message layer."""
    item = raw_item.upper()
    if item == "ENVELOPE":
        return [b"ENVELOPE " + envelope(msg)]
    if item == "BODY":
        return [b"BODY " + bodystructure(msg, extended=False)]
    if item == "BODYSTRUCTURE":
        return [b"BODYSTRUCTURE " + bodystructure(msg)]
    if item == "RFC822.SIZE":
        return [b"RFC822.SIZE %d" % msg.size]
    if item in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        text = {"RFC822": "", "RFC822.HEADER": "HEADER", "RFC822.TEXT": "TEXT"}[item]
        data = section_bytes(msg, (), text)
        assert data is not None
        return [item.encode() + b" " + lit(data)]
    m = re.fullmatch(
        r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[([\d.]*?)\.?((?:HEADER\.FIELDS(?:\.NOT)?|HEADER|TEXT|MIME)?)(?: \((.*)\))?\](?:<(\d+)\.(\d+)>)?",
        raw_item,
        re.I | re.S,
    )
    if not m:
        return []
    name = m.group(1).upper().replace(".PEEK", "")
    path = tuple(int(x) for x in m.group(2).split(".") if x)
    text = m.group(3).upper()
    fields = tuple(m.group(4).split()) if m.group(4) else ()
    echo = raw_item[raw_item.index("[") : raw_item.index("]") + 1].encode()
    if name == "BINARY.SIZE":
        data = binary_bytes(msg, path)
        assert data is not None
        return [b"BINARY.SIZE" + echo + b" %d" % len(data)]
    data = binary_bytes(msg, path) if name == "BINARY" else section_bytes(msg, path, text, fields)
    assert data is not None
    suffix = b""
    if m.group(5) is not None:
        origin = int(m.group(5))
        data = partial(data, origin, int(m.group(6)))
        suffix = b"<%d>" % origin
    return [name.encode() + echo + suffix + b" " + lit(data)]


def split_items(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    items: list[str] = []
    depth = 0
    cur = ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == " " and depth == 0:
            if cur:
                items.append(cur)
            cur = ""
            continue
        cur += ch
    if cur:
        items.append(cur)
    return items


def substitute(command: str, env: dict[str, object]) -> str:
    def repl(m: re.Match[str]) -> str:
        v = env.get(m.group(1))
        if v is None:
            return m.group(0)
        return v.data.decode() if isinstance(v, Lit) else str(v)

    return re.sub(r"\$(\w+)", repl, command)


def run_command(box: Box, command: str) -> list[bytes] | None:
    """Our untagged responses for one script command; None for a command outside the message layer."""
    words = command.split(" ", 1)
    verb = words[0].lower()
    if verb in ("ok", "no", "bad"):
        words = words[1].split(" ", 1) if len(words) > 1 else [""]
        verb = words[0].lower()
    rest = words[1] if len(words) > 1 else ""
    live = [m for i, m in enumerate(box.messages)]
    if verb == "append":
        box.append()
        return []
    if verb == "store" and "\\deleted" in rest.lower():
        for seq in seqset(rest.split()[0], len(live)):
            box.deleted.add(id(live[seq - 1]))
        return []
    if verb == "expunge":
        box.messages = [m for m in box.messages if id(m) not in box.deleted]
        box.deleted.clear()
        return []
    if verb == "fetch":
        seqs, _, items = rest.partition(" ")
        out = []
        for seq in seqset(seqs, len(live)):
            msg = Message(live[seq - 1].raw)
            rendered = [r for item in split_items(items) for r in fetch_item(msg, item)]
            if rendered:
                out.append(b"%d FETCH (" % seq + b" ".join(rendered) + b")")
        return out
    if verb == "search":
        hits = search(box, parse_args(rest.encode()))
        return [b"SEARCH" + b"".join(b" %d" % n for n in hits)]
    if verb in ("sort", "thread"):
        args = parse_args(rest.encode())
        if verb == "sort" and isinstance(args[0], str) and args[0].lower() == "return":
            return None  # ESORT / CONTEXT=SORT: the server's part
        hits = search(box, args[2:])
        sort_items = [
            SortItem(
                seq,
                seq,
                len(box.messages[seq - 1].raw),
                box.messages[seq - 1].internaldate,
                Message(box.messages[seq - 1].raw),
            )
            for seq in hits
        ]
        if verb == "sort":
            criteria = args[0]
            assert isinstance(criteria, list)
            return [b"SORT" + b"".join(b" %d" % n for n in sort_ids(sort_items, [str(c) for c in criteria]))]
        return [b"THREAD " + render_threads(thread_ids(sort_items, str(args[0])))]
    return None


SCRIPTS = (
    sorted(
        p.name
        for p in SUITE.iterdir()
        if not p.name.endswith(".mbox")
        and (
            p.name.startswith(
                (
                    "fetch-",
                    "search-addresses",
                    "search-body",
                    "search-header",
                    "search-date",
                    "search-size",
                    "sort-",
                    "thread",
                )
            )
            or p.name == "nil"
        )
        and p.name != "sort-partial"
    )
    if SUITE.is_dir()
    else []
)


def test_the_suite_is_there() -> None:
    assert len(SCRIPTS) >= 30, f"imaptest scripts not found in {SUITE}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_imaptest_script(name: str) -> None:
    headers, steps = read_script(SUITE / name)
    mbox = SUITE / f"{name}.mbox"
    source = read_mbox(mbox if mbox.exists() else SUITE / "default.mbox")
    box = Box(source)
    if headers.get("state", "selected") not in ("created", "auth", "nonauth"):
        count = headers.get("messages", "all")
        for _ in range(len(source) if count == "all" else int(count)):
            box.append()
    env: dict[str, object] = {}
    checked = 0
    for step in steps:
        command = substitute(step.command, env)
        responses = run_command(box, command)
        if responses is None:
            continue
        parsed = [parse_args(r) for r in responses]
        for kind, expected_line in step.expect:
            expected = parse_args(expected_line)
            found = False
            errors = []
            for actual in parsed:
                trial = dict(env)
                try:
                    if len(expected) >= 3 and str(expected[1]).upper() == "FETCH":
                        match(expected[:2], actual[:2], trial)
                        match(expected[2], actual[2], trial, fetch_list=True)
                    else:
                        match(expected, actual, trial)
                except (Mismatch, IndexError) as exc:
                    errors.append(str(exc))
                    continue
                found = True
                if kind == "*":
                    env.update(trial)
                break
            if kind == "*":
                is_flag_update = bool(re.fullmatch(rb"\d+ fetch \(flags \([^)]*\)\)", expected_line, re.I))
                if is_flag_update:
                    continue
                assert found, f"{name}: {command}\nexpected {expected_line!r}\ngot {responses!r}\n{errors}"
                checked += 1
            elif kind == "!":
                assert not found, f"{name}: {command}: must not match {expected_line!r}"
    assert checked > 0, f"{name}: nothing was checked"
