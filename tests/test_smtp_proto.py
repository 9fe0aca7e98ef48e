"""Unit tests of the sans-I/O SMTP pieces: command parsing, paths (quoting, source routes, literals), replies,
the DATA decoder (dot-stuffing, smuggling, size), and the access-map decisions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinmail.policy.decision import Action, from_access
from kinmail.proto import smtp
from kinmail.proto.smtp import ProtocolError, Reply, parse_command, parse_path
from kinmail.proto.smtpdata import DataDecoder


def test_reply_renders_enhanced_code_on_every_line() -> None:
    assert Reply(550, "5.1.1", "no such user").render() == b"550 5.1.1 no such user\r\n"
    assert Reply(250, "2.0.0", "a\nb").render() == b"250-2.0.0 a\r\n250 2.0.0 b\r\n"
    assert smtp.ehlo_reply("mx", "hi", ["PIPELINING", "SIZE 10"]).render() == (
        b"250-mx hi\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
    )


def test_parse_command_verbs_and_junk() -> None:
    assert parse_command(b"mail FROM:<a@b.c>\r\n") == smtp.Command("MAIL", "FROM:<a@b.c>")
    assert parse_command(b"QUIT\r\n") == smtp.Command("QUIT", "")
    for bad in (b"FOO bar\r\n", b"MAIL\rFROM:<a@b>\r\n", b"NO\x00OP\r\n", b"\r\n"):
        with pytest.raises(ProtocolError) as info:
            parse_command(bad)
        assert info.value.reply.code == 500


@pytest.mark.parametrize(
    ("arg", "address"),
    [
        ("FROM:<alice@example.test>", "alice@example.test"),
        ("FROM:<>", ""),
        ("FROM: <Alice@Example.TEST>", "Alice@example.test"),
        ('FROM:<"john doe"@example.test>', '"john doe"@example.test'),
        ("FROM:<@relay.example,@other.example:bob@example.test>", "bob@example.test"),
        ("FROM:<bob@[192.0.2.1]>", "bob@[192.0.2.1]"),
        ("FROM:<bob@[IPv6:2001:db8::1]>", "bob@[ipv6:2001:db8::1]"),
    ],
)
def test_parse_reverse_path(arg: str, address: str) -> None:
    assert parse_path(arg, "FROM").address == address


def test_forward_path_tricks_keep_the_real_domain() -> None:
    # Each of these is either refused or stays within the domain after the last "@".
    assert (
        parse_path("TO:<@ours.example:user@other.example>", "TO", forward=True).address
        == "user@other.example"
    )
    assert parse_path("TO:<user%other.example@ours.example>", "TO", forward=True).mailbox == smtp.Mailbox(
        "user%other.example", "ours.example"
    )
    quoted = parse_path('TO:<"user@other.example"@ours.example>', "TO", forward=True).mailbox
    assert quoted == smtp.Mailbox("user@other.example", "ours.example")
    assert parse_path("TO:<user!other.example@ours.example>", "TO", forward=True).mailbox == smtp.Mailbox(
        "user!other.example", "ours.example"
    )
    with pytest.raises(ProtocolError):
        parse_path("TO:<user@other.example@ours.example>", "TO", forward=True)


@pytest.mark.parametrize(
    "arg",
    [
        "FROM:alice@example.test",
        "FROM:<alice@example.test>junk",
        "FROM:<alice>",
        "FROM:<a@b",
        "TO:<a@b.c>",
        "FROM:<a@-bad-.example>",
        "FROM:<a@[300.1.1.1]>",
        "FROM:<a..b@c.d>",
    ],
)
def test_bad_reverse_paths(arg: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_path(arg, "FROM")
    assert info.value.reply.code == 501


def test_lenient_envelopes_accept_bare_addresses() -> None:
    assert parse_path("FROM:alice@example.test SIZE=10", "FROM", strict=False).address == "alice@example.test"


def test_params_and_smtputf8() -> None:
    path = parse_path("FROM:<a@b.c> SIZE=100 BODY=8BITMIME RET=HDRS", "FROM")
    assert path.params == {"SIZE": "100", "BODY": "8BITMIME", "RET": "HDRS"}
    with pytest.raises(ProtocolError) as info:
        parse_path("FROM:<jörg@b.c>", "FROM")
    assert info.value.reply.enhanced == "5.6.7"
    assert parse_path("FROM:<jörg@b.c> SMTPUTF8", "FROM").address == "jörg@b.c"


def test_xtext_round_trip() -> None:
    assert smtp.xtext_decode("a+2Bb") == "a+b"
    assert smtp.xtext_decode(smtp.xtext_encode("x=y+z ü")) == "x=y+z ü"
    with pytest.raises(ValueError):
        smtp.xtext_decode("a+zz")


def _decode(pieces: list[bytes], limit: int = 0) -> tuple[bytes, DataDecoder]:
    decoder = DataDecoder(limit)
    out = b""
    for piece in pieces:
        out += decoder.feed(piece)
        if decoder.done:
            break
    return out, decoder


def test_data_dot_stuffing_and_end() -> None:
    out, dec = _decode([b"Subject: x\r\n\r\n..dot\r\n", b".\r\nNOOP\r\n"])
    assert out == b"Subject: x\r\n\r\n.dot\r\n"
    assert dec.done and dec.leftover == b"NOOP\r\n" and not dec.bad_line_ending


def test_data_end_split_across_reads() -> None:
    out, dec = _decode([b"a\r\n.", b"\r", b"\nQUIT\r\n"])
    assert out == b"a\r\n" and dec.done and dec.leftover == b"QUIT\r\n"


@pytest.mark.parametrize(
    "smuggle",
    [
        b"a\r\n\n.\r\nMAIL FROM:<x@y.z>\r\n",
        b"a\r\n.\nMAIL FROM:<x@y.z>\r\n",
        b"a\n.\nb\r\n",
        b"a\r.\rb\r\n",
        b"x\ry\r\n",
    ],
)
def test_data_bare_lf_or_cr_is_not_an_end_and_marks_the_message(smuggle: bytes) -> None:
    _out, dec = _decode([smuggle])
    assert not dec.done
    out2, dec = _decode([smuggle, b".\r\n"])
    assert dec.done and dec.bad_line_ending and out2 == b""


def test_data_size_limit() -> None:
    _out, dec = _decode([b"x" * 50 + b"\r\n", b"y" * 50 + b"\r\n.\r\n"], limit=60)
    assert dec.done and dec.too_big


@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=20),
    st.integers(min_value=1, max_value=17),
)
def test_data_round_trip(lines: list[bytes], step: int) -> None:
    """Any message, dot-stuffed and cut at any place, comes out as it went in."""
    message = b"".join(line + b"\r\n" for line in lines)
    wire = (
        b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
        + b".\r\nQUIT\r\n"
    )
    decoder = DataDecoder(0)
    out = b""
    for i in range(0, len(wire), step):
        out += decoder.feed(wire[i : i + step])
    assert decoder.done and out == message and decoder.leftover == b"QUIT\r\n"


@given(st.binary(max_size=300))
def test_parsers_never_crash(data: bytes) -> None:
    for fn in (lambda: parse_command(data), lambda: parse_path(data.decode("utf-8", "replace"), "FROM")):
        try:
            fn()
        except ProtocolError:
            pass
    DataDecoder(100).feed(data)


def test_access_results() -> None:
    reject, defer = smtp.ACCESS_DENIED, Reply(450, "4.7.1", "later")
    assert from_access("OK", smtp_reason(), reject, defer).action == Action.OK
    d = from_access("REJECT go away", smtp_reason(), reject, defer)
    assert d.action == Action.REJECT and d.reply == Reply(554, "5.7.1", "go away")
    d = from_access("550 5.7.2 custom", smtp_reason(), reject, defer)
    assert d.action == Action.REJECT and d.reply == Reply(550, "5.7.2", "custom")
    d = from_access("421 busy", smtp_reason(), reject, defer)
    assert d.action == Action.DEFER and d.reply is not None and d.reply.code == 421
    assert from_access("DEFER", smtp_reason(), reject, defer).reply == defer
    assert from_access("DISCARD", smtp_reason(), reject, defer).action == Action.DISCARD
    assert from_access("HOLD", smtp_reason(), reject, defer).action == Action.HOLD
    assert from_access("DUNNO", smtp_reason(), reject, defer).action == Action.DUNNO


def smtp_reason():  # type: ignore[no-untyped-def]
    from kinmail.policy.decision import Reason

    return Reason.CLIENT_ACCESS
