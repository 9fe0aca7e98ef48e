"""Unit tests of the sans-I/O ManageSieve parser and responses (RFC 5804)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinmail.proto import managesieve as ms
from kinmail.proto.managesieve import Atom, Command, CommandParser, ParseError, TooLarge


def parse_all(data: bytes, max_literal: int = 1000) -> list[Command | str]:
    parser = CommandParser(max_literal)
    parser.feed(data)
    out: list[Command | str] = []
    while True:
        try:
            command = parser.next()
        except ParseError as exc:
            out.append(f"error: {exc}")
            continue
        if command is None:
            return out
        out.append(command)


def test_quoted_strings_and_atoms() -> None:
    assert parse_all(b'havespace "my \\"x\\" script" 123\r\n') == [
        Command("HAVESPACE", ('my "x" script', Atom("123")))
    ]


def test_non_synchronizing_and_synchronizing_literals() -> None:
    data = b'PUTSCRIPT "a" {5+}\r\nkeep;\r\nPUTSCRIPT {1}\r\nb {2+}\r\nxy\r\n'
    assert parse_all(data) == [Command("PUTSCRIPT", ("a", "keep;")), Command("PUTSCRIPT", ("b", "xy"))]


def test_literal_fed_byte_by_byte() -> None:
    parser = CommandParser(100)
    data = b"CHECKSCRIPT {12+}\r\nkeep;\r\nstop;\r\nNOOP\r\n"
    got: list[Command] = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        while (command := parser.next()) is not None:
            got.append(command)
    assert got == [Command("CHECKSCRIPT", ("keep;\r\nstop;",)), Command("NOOP")]


def test_too_large_literal_is_dropped_and_parsing_goes_on() -> None:
    data = b'PUTSCRIPT "big" {20+}\r\n' + b"x" * 20 + b"\r\nNOOP\r\n"
    assert parse_all(data, max_literal=10) == [Command("PUTSCRIPT", ("big", TooLarge(20))), Command("NOOP")]


def test_bad_lines_are_errors_and_the_next_command_parses() -> None:
    out = parse_all(b'GETSCRIPT "unterminated\r\nLISTSCRIPTS\r\nx{1}y\r\n\r\n')
    assert isinstance(out[0], str) and out[1] == Command("LISTSCRIPTS")
    assert all(isinstance(item, str) for item in out[2:])


def test_overlong_line_is_fatal() -> None:
    parser = CommandParser(10, max_line=100)
    parser.feed(b"A" * 200)
    with pytest.raises(ParseError) as info:
        parser.next()
    assert info.value.fatal


def test_bare_string_is_a_sasl_response() -> None:
    assert parse_all(b'"AGFsaWNlAHB3"\r\n') == [Command("", ("AGFsaWNlAHB3",))]


def test_responses_quote_or_use_literals() -> None:
    assert (
        ms.Response(ms.Status.NO, "no such", ms.Code.NONEXISTENT).render()
        == b'NO (NONEXISTENT) "no such"\r\n'
    )
    assert ms.Response(ms.Status.NO, "1:2: a\n3:4: b").render() == b"NO {13}\r\n1:2: a\n3:4: b\r\n"
    assert ms.Response(ms.Status.OK, "Done", ms.tag_code("t1")).render() == b'OK (TAG "t1") "Done"\r\n'
    assert ms.script_listing([("a", False), ("b", True)]) == b'"a"\r\n"b" ACTIVE\r\n'


@given(st.binary(max_size=300), st.integers(1, 50))
def test_parser_never_crashes(data: bytes, step: int) -> None:
    parser = CommandParser(64, max_line=128)
    for i in range(0, len(data), step):
        parser.feed(data[i : i + step])
        while True:
            try:
                if parser.next() is None:
                    break
            except ParseError:
                continue


@given(st.text(max_size=50).filter(lambda t: "\0" not in t))
def test_quoted_round_trip(text: str) -> None:
    rendered = ms.quote(text)
    parser = CommandParser(1000)
    parser.feed(b"X " + rendered + b"\r\n")
    command = parser.next()
    assert command is not None and command.args == (text,)
