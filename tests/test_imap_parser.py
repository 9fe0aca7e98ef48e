"""Unit tests of the sans-I/O IMAP parser, argument helpers and response encoding (no server needed)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kinmail.proto.imap_args import (
    Section,
    SeqSet,
    parse_date,
    parse_datetime,
    parse_fetch_atts,
    parse_flags,
    parse_search,
    parse_seqset,
)
from kinmail.proto.imap_parser import (
    Atom,
    BadInput,
    Command,
    CommandParser,
    NeedLiteral,
    ParseError,
    RawLine,
    Str,
    tokenize,
)
from kinmail.proto.imap_response import astring, literal, quoted, string


def events(parser: CommandParser) -> list[object]:
    out = []
    while (ev := parser.next_event()) is not None:
        out.append(ev)
    return out


def one(data: bytes) -> Command:
    p = CommandParser()
    p.feed(data)
    (ev,) = events(p)
    assert isinstance(ev, Command), ev
    return ev


def test_simple_command_and_uid_prefix() -> None:
    cmd = one(b"a1 uid fetch 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.100>)\r\n")
    assert cmd.tag == "a1"
    assert cmd.name == "UID FETCH"
    assert cmd.args[0] == Atom("1:*")
    assert cmd.args[1] == [Atom("FLAGS"), Atom("BODY.PEEK[HEADER.FIELDS (From To)]<0.100>")]


def test_quoted_strings_and_escapes() -> None:
    cmd = one(b'a LOGIN "us\\"er" "pa\\\\ss"\r\n')
    assert cmd.args == [Str(b'us"er'), Str(b"pa\\ss")]


def test_synchronising_literal_asks_for_continuation() -> None:
    p = CommandParser()
    p.feed(b"a APPEND INBOX {5}\r\n")
    assert events(p) == [NeedLiteral("a", 5, sync=True)]
    p.feed(b"hello\r\n")
    (cmd,) = events(p)
    assert isinstance(cmd, Command)
    assert cmd.args == [Atom("INBOX"), Str(b"hello", literal=True)]


def test_non_synchronising_and_binary_literal_in_one_feed() -> None:
    p = CommandParser()
    p.feed(b"a APPEND INBOX (\\Seen) ~{3+}\r\na\x00b {2+}\r\nxy\r\n")
    evs = events(p)
    assert isinstance(evs[-1], Command)
    assert evs[-1].args[1] == [Atom("\\Seen")]
    assert evs[-1].args[2] == Str(b"a\x00b", literal=True, literal8=True)
    assert evs[-1].args[3] == Str(b"xy", literal=True)


def test_literal_too_big_is_refused_and_parser_goes_on() -> None:
    p = CommandParser(max_literal=10)
    p.feed(b"a APPEND INBOX {11}\r\nb NOOP\r\n")
    evs = events(p)
    assert evs[0] == NeedLiteral("a", 11, sync=True, too_big=True)
    assert isinstance(evs[1], Command) and evs[1].name == "NOOP"


def test_non_sync_literal_too_big_is_fatal() -> None:
    p = CommandParser(max_literal=10)
    p.feed(b"a APPEND INBOX {11+}\r\n")
    (ev,) = events(p)
    assert isinstance(ev, BadInput) and ev.fatal


def test_line_too_long_gives_bad_then_recovers() -> None:
    p = CommandParser(max_line=1000)
    p.feed(b"a NOOP " + b"x" * 5000)
    (ev,) = events(p)
    assert isinstance(ev, BadInput) and ev.tag == "a"
    p.feed(b"yyy\r\nb NOOP\r\n")
    (ev2,) = events(p)
    assert isinstance(ev2, Command) and ev2.tag == "b"


@pytest.mark.parametrize(
    "line",
    [b"\r\n", b"a\r\n", b'a LOGIN "unterminated\r\n', b"a LIST (\r\n", b"a LIST )\r\n", b"(x) NOOP\r\n"],
)
def test_bad_syntax_is_reported(line: bytes) -> None:
    p = CommandParser()
    p.feed(line)
    (ev,) = events(p)
    assert isinstance(ev, BadInput)


def test_raw_mode_for_idle_done() -> None:
    p = CommandParser()
    p.raw = True
    p.feed(b"DONE\r\n")
    assert events(p) == [RawLine(b"DONE")]


def test_unclosed_bracket_stays_in_atom() -> None:
    cmd = one(b"a SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}\r\n")
    assert cmd.args == [Atom("!#$&'+,-.0123456789:;<=>?@^_`|[}")]


def test_seqset() -> None:
    s = parse_seqset(Atom("1:3,5,*"))
    assert s.resolve(7) == [1, 2, 3, 5, 7]
    assert parse_seqset(Atom("*:4")).resolve(6) == [4, 5, 6]
    assert parse_seqset(Atom("$")).saved
    with pytest.raises(ParseError):
        parse_seqset(Atom("0"))
    with pytest.raises(ParseError):
        parse_seqset(Atom("1:x"))
    assert SeqSet(((None, None),)).resolve(0) == []


def test_fetch_atts_and_sections() -> None:
    atts = parse_fetch_atts([Atom("BODY.PEEK[1.2.HEADER.FIELDS.NOT (X-A)]<10.20>"), Atom("binary[2]")])
    assert atts[0].section == Section((1, 2), "HEADER.FIELDS.NOT", ("X-A",))
    assert atts[0].partial == (10, 20) and atts[0].peek
    assert atts[0].response_name() == "BODY[1.2.HEADER.FIELDS.NOT (X-A)]<10>"
    assert atts[1].name == "BINARY" and atts[1].section == Section((2,))
    assert [a.name for a in parse_fetch_atts(Atom("FAST"))] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    for bad in ("BODY[MIME]", "BODY[1.X]", "BINARY[HEADER]", "NOPE", "BODY[]<1>"):
        with pytest.raises(ParseError):
            parse_fetch_atts(Atom(bad))


def test_parsed_arguments_are_remembered_but_not_shared() -> None:
    first = parse_fetch_atts([Atom("FLAGS"), Atom("UID")])
    first.append(first[0])  # FETCH adds UID, MODSEQ or FLAGS to its own list
    again = parse_fetch_atts([Atom("FLAGS"), Atom("UID")])
    assert [a.name for a in again] == ["FLAGS", "UID"] and again is not first
    assert [a.name for a in parse_fetch_atts(Atom("FLAGS"))] == ["FLAGS"]
    assert len(parse_fetch_atts(Atom("ALL"))) == 4  # a macro alone, not as a list item
    with pytest.raises(ParseError):
        parse_fetch_atts([Atom("ALL")])
    assert parse_seqset(Atom("2:4")) == parse_seqset(Atom("2:4")) == SeqSet(((2, 4),))
    for _ in range(2):  # a bad set is refused each time, never remembered
        with pytest.raises(ParseError):
            parse_seqset(Atom("0:3"))


def test_flags_dates() -> None:
    assert parse_flags([Atom("\\seen"), Atom("$Junk")]) == ["\\Seen", "$Junk"]
    with pytest.raises(ParseError):
        parse_flags([Atom("\\Recent")])
    assert parse_date(Atom("1-Feb-1994")) == date(1994, 2, 1)
    assert parse_datetime(Str(b"17-Jul-1996 02:44:25 -0700")) == 837596665.0
    with pytest.raises(ParseError):
        parse_date(Atom("31-Feb-1994"))


def test_search_program() -> None:
    key = parse_search(
        [
            Atom("OR"),
            Atom("FROM"),
            Str(b"x"),
            Atom("NOT"),
            Atom("SEEN"),
            Atom("1:3"),
            [Atom("LARGER"), Atom("10")],
        ]
    )
    assert key.name == "AND"
    assert [k.name for k in key.children] == ["OR", "SEQ", "AND"] or [k.name for k in key.children] == [
        "OR",
        "SEQ",
        "LARGER",
    ]
    with pytest.raises(ParseError):
        parse_search([Atom("FROM")])
    with pytest.raises(ParseError):
        parse_search([Atom("BOGUS")])


def test_response_strings() -> None:
    assert quoted('a"b') == b'"a\\"b"'
    assert string("line\r\nbreak") == b"{11}\r\nline\r\nbreak"
    assert astring("INBOX") == b"INBOX"
    assert astring("NIL") == b'"NIL"'
    assert astring("a b") == b'"a b"'
    assert literal(b"\x00", binary=True) == b"~{1}\r\n\x00"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_parser_never_crashes(data: bytes, chunk: int) -> None:
    p = CommandParser(max_line=1000, max_literal=100)
    for i in range(0, len(data), chunk):
        p.feed(data[i : i + chunk])
        for _ in range(1000):
            ev = p.next_event()
            if ev is None:
                break
            assert isinstance(ev, Command | NeedLiteral | BadInput | RawLine)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20), max_size=5)
)
def test_quoted_round_trip(values: list[str]) -> None:
    line = b"t X " + b" ".join(quoted(v) for v in values) + b"\r\n"
    cmd = one(line)
    assert [a.text for a in cmd.args if isinstance(a, Str)] == values


def _reference_tokens(line: bytes) -> list[object]:
    """The grammar read one byte at a time, the plain way: the oracle for the tokenizer's fast paths."""
    stack: list[list[object]] = [[]]
    i, n = 0, len(line)
    while i < n:
        c = line[i : i + 1]
        if c == b" ":
            i += 1
        elif c == b"(":
            new: list[object] = []
            stack[-1].append(new)
            stack.append(new)
            i += 1
        elif c == b")":
            if len(stack) == 1:
                raise ParseError("Unexpected )")
            stack.pop()
            i += 1
        elif c == b'"':
            out, i = b"", i + 1
            while True:
                if i >= n:
                    raise ParseError("Unterminated quoted string")
                ch = line[i : i + 1]
                if ch == b"\\":
                    if line[i + 1 : i + 2] not in (b'"', b"\\"):
                        raise ParseError("Invalid escape in quoted string")
                    out, i = out + line[i + 1 : i + 2], i + 2
                elif ch == b'"':
                    i += 1
                    break
                elif ch in (b"\r", b"\n", b"\0"):
                    raise ParseError("Invalid character in quoted string")
                else:
                    out, i = out + ch, i + 1
            stack[-1].append(Str(out))
        elif c[0] < 0x20 or c[0] == 0x7F:
            raise ParseError("Invalid character")
        elif c == b"{":
            raise ParseError("Unexpected {")
        else:
            start = i
            while i < n:
                ch = line[i : i + 1]
                if ch == b"[":
                    depth, j = 0, i
                    while j < n and line[j : j + 1] not in (b"\r", b"\n"):
                        depth += {b"[": 1, b"]": -1}.get(line[j : j + 1], 0)
                        if depth == 0:
                            break
                        j += 1
                    i = j + 1 if j < n and depth == 0 else i + 1
                    continue
                if ch in b' (){"' or ch[0] < 0x20 or ch[0] == 0x7F:
                    break
                i += 1
            stack[-1].append(Atom(line[start:i].decode("utf-8", "replace")))
    if len(stack) != 1:
        raise ParseError("Unbalanced parentheses")
    return stack[0]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from([b" ", b"(", b")", b"[", b"]", b'"', b"\\", b"\r", b"\0", b"{", b"\x7f", b"\xc3\xa9"])
        | st.sampled_from([b"BODY.PEEK", b"HEADER.FIELDS", b"1:*", b"\\Seen", b"<0.10>", b"x", b"\xff"]),
        max_size=40,
    )
)
@example([b"x", b"[", b"[", b"x", b"]", b" ", b"(", b"x", b"]", b")"])  # nested, with a space and a paren
@example([b"x", b"[", b"x", b"\r", b"]", b" ", b"x", b"]"])  # a CR ends the bracket's reach
@example([b'"', b"x", b"\\", b'"', b"x", b'"', b" ", b'"', b"\\", b"x", b'"'])  # escapes, good and bad
def test_tokenizer_agrees_with_a_byte_by_byte_reading(pieces: list[bytes]) -> None:
    line = b"".join(pieces)
    try:
        expected: list[object] | str = _reference_tokens(line)
    except ParseError as exc:
        expected = str(exc)
    try:
        got: list[object] | str = list(tokenize([line]))
    except ParseError as exc:
        got = str(exc)
    assert got == expected
