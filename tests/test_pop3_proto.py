"""Unit tests of the sans-I/O POP3 code: parsing, the session state machine, dot-stuffing and TOP."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from kinmail.proto import pop3
from kinmail.proto.pop3 import (
    Close,
    Login,
    MessageEncoder,
    Pop3Message,
    Pop3Session,
    Quit,
    Send,
    SendMessage,
    StartTls,
    crlf_size,
    encode_crlf_message,
    encode_message,
    uidl_for,
)


def sent(actions: list[pop3.Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def logged_in(count: int = 3) -> Pop3Session:
    session = Pop3Session(loopback=True)
    session.login_ok(
        "alice@example.test", [Pop3Message(uid, 100 + uid, uidl_for(uid, 7)) for uid in range(1, count + 1)]
    )
    return session


def test_parse_command_upper_cases_verb_and_keeps_raw_argument() -> None:
    command = pop3.parse_command(b"pass  secret with spaces\r\n")
    assert command.name == "PASS"
    assert command.raw_arg == " secret with spaces"
    assert command.args == ("secret", "with", "spaces")


def test_user_pass_asks_for_login_with_the_whole_password() -> None:
    session = Pop3Session(loopback=True)
    assert sent(session.handle_line(b"USER alice@example.test\r\n")).startswith(b"+OK")
    actions = session.handle_line(b"PASS pass word\r\n")
    assert actions == [Login("alice@example.test", "pass word")]


def test_plaintext_refused_without_tls_from_remote() -> None:
    session = Pop3Session(loopback=False, tls_available=True)
    reply = sent(session.handle_line(b"USER alice\r\n"))
    assert reply.startswith(b"-ERR [AUTH]")
    capa = sent(session.handle_line(b"CAPA\r\n"))
    assert b"STLS\r\n" in capa
    assert b"USER\r\n" not in capa
    assert isinstance(session.handle_line(b"STLS\r\n")[0], StartTls)
    session.tls_started()
    capa = sent(session.handle_line(b"CAPA\r\n"))
    assert b"STLS" not in capa and b"USER\r\n" in capa and b"SASL PLAIN\r\n" in capa


def test_auth_plain_initial_response_and_continuation() -> None:
    token = base64.b64encode(b"\0alice@example.test\0pw").decode()
    session = Pop3Session(loopback=True)
    assert session.handle_line(f"AUTH PLAIN {token}\r\n".encode()) == [Login("alice@example.test", "pw")]
    session = Pop3Session(loopback=True)
    assert sent(session.handle_line(b"AUTH PLAIN\r\n")) == b"+ \r\n"
    assert session.handle_line(token.encode() + b"\r\n") == [Login("alice@example.test", "pw")]
    session = Pop3Session(loopback=True)
    session.handle_line(b"AUTH PLAIN\r\n")
    assert sent(session.handle_line(b"*\r\n")).startswith(b"-ERR")
    assert sent(session.handle_line(b"AUTH PLAIN !!!\r\n")).startswith(b"-ERR [AUTH]")


def test_failed_and_throttled_logins_have_response_codes() -> None:
    session = Pop3Session(loopback=True)
    session.handle_line(b"USER a\r\n")
    assert sent(session.login_failed(False)).startswith(b"-ERR [AUTH]")
    assert sent(session.login_failed(True)).startswith(b"-ERR [SYS/TEMP]")
    assert sent(session.maildrop_locked()).startswith(b"-ERR [IN-USE]")
    assert session.state == pop3.State.AUTHORIZATION


def test_transaction_commands() -> None:
    session = logged_in(3)
    assert sent(session.handle_line(b"STAT\r\n")) == b"+OK 3 306\r\n"
    assert sent(session.handle_line(b"LIST\r\n")) == b"+OK 3 messages\r\n1 101\r\n2 102\r\n3 103\r\n.\r\n"
    assert sent(session.handle_line(b"LIST 2\r\n")) == b"+OK 2 102\r\n"
    assert sent(session.handle_line(b"UIDL 1\r\n")) == b"+OK 1 0000000100000007\r\n"
    assert sent(session.handle_line(b"DELE 2\r\n")).startswith(b"+OK")
    assert sent(session.handle_line(b"DELE 2\r\n")).startswith(b"-ERR")
    assert sent(session.handle_line(b"RETR 2\r\n")).startswith(b"-ERR")
    assert sent(session.handle_line(b"STAT\r\n")) == b"+OK 2 204\r\n"
    assert b"\r\n2 " not in sent(session.handle_line(b"UIDL\r\n"))
    assert session.handle_line(b"RETR 3\r\n") == [SendMessage(3, 3, 103, None)]
    assert session.handle_line(b"TOP 1 0\r\n") == [SendMessage(1, 1, 101, 0)]
    assert sent(session.handle_line(b"LIST 4\r\n")).startswith(b"-ERR")
    assert sent(session.handle_line(b"LIST x\r\n")).startswith(b"-ERR")
    session.handle_line(b"RSET\r\n")
    assert sent(session.handle_line(b"STAT\r\n")) == b"+OK 3 306\r\n"
    session.handle_line(b"DELE 1\r\n")
    session.handle_line(b"DELE 3\r\n")
    assert session.handle_line(b"QUIT\r\n") == [Quit((1, 3))]


def test_quit_before_login_deletes_nothing() -> None:
    assert Pop3Session().handle_line(b"QUIT\r\n") == [Quit(())]


def test_wrong_state_and_unknown_commands_count_towards_the_limit() -> None:
    session = Pop3Session(loopback=True, max_errors=3)
    assert sent(session.handle_line(b"STAT\r\n")).startswith(b"-ERR")
    assert sent(session.handle_line(b"FOO\r\n")).startswith(b"-ERR")
    actions = session.handle_line(b"\xff\xfe\r\n")
    assert isinstance(actions[-1], Close)


def test_overlong_line_is_an_error() -> None:
    session = Pop3Session(loopback=True)
    assert sent(session.handle_line(b"NOOP " + b"x" * 5000 + b"\r\n")).startswith(b"-ERR")


def test_dot_stuffing_and_bare_lf() -> None:
    data = b"Subject: x\n\n.hidden\nline\r\n..two\r\n."
    assert encode_message(data) == b"Subject: x\r\n\r\n..hidden\r\nline\r\n...two\r\n..\r\n.\r\n"


def test_top_header_and_n_lines() -> None:
    data = b"A: 1\r\nB: 2\r\n\r\nl1\r\n.l2\r\nl3\r\n"
    assert encode_message(data, 0) == b"A: 1\r\nB: 2\r\n\r\n.\r\n"
    assert encode_message(data, 2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n"
    assert encode_message(data, 10) == data.replace(b".l2", b"..l2") + b".\r\n"


def test_crlf_size_counts_bare_line_ends_as_two() -> None:
    assert crlf_size(b"a\nb\r\nc\r") == 9


def _unstuff(body: bytes) -> bytes:
    assert body.endswith(b".\r\n")
    lines = body[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def _normalise(data: bytes) -> bytes:
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return text


_MESSAGES = st.lists(st.sampled_from([b"a", b"b", b".", b"\r", b"\n"]), max_size=300).map(b"".join)


@given(_MESSAGES, st.lists(st.integers(1, 40), max_size=8))
def test_chunked_encoding_matches_whole_and_round_trips(data: bytes, cuts: list[int]) -> None:
    whole = encode_message(data)
    encoder = MessageEncoder()
    out, pos = [], 0
    for cut in cuts:
        out.append(encoder.feed(data[pos : pos + cut]))
        pos += cut
    out.append(encoder.feed(data[pos:]))
    out.append(encoder.finish())
    assert b"".join(out) == whole
    assert _unstuff(whole) == _normalise(data)
    unterminated = bool(data) and not data.endswith((b"\n", b"\r"))
    assert len(_normalise(data)) == crlf_size(data) + (2 if unterminated else 0)
    # every line that starts with a dot was stuffed, except the terminator
    lines = whole[:-3].split(b"\r\n")
    assert all(line.startswith(b"..") for line in lines if line.startswith(b"."))


@given(_MESSAGES)
def test_crlf_shortcut_matches_the_general_encoder(data: bytes) -> None:
    crlf = data.replace(b"\r", b"").replace(b"\n", b"\r\n")  # CRLF only, as the shortcut requires
    assert encode_crlf_message(crlf) == encode_message(crlf)


@given(_MESSAGES, st.integers(0, 5))
def test_top_chunked_matches_whole(data: bytes, count: int) -> None:
    whole = encode_message(data, count)
    encoder = MessageEncoder(count)
    pieces = [encoder.feed(data[i : i + 7]) for i in range(0, len(data), 7)]
    assert b"".join(pieces) + encoder.finish() == whole
    assert _normalise(data).startswith(_unstuff(whole))


@given(st.binary(max_size=200))
def test_any_line_gives_a_reply_never_an_exception(line: bytes) -> None:
    session = Pop3Session(loopback=True)
    actions = session.handle_line(line + b"\r\n")
    assert actions
