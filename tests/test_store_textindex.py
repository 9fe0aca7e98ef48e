"""`kinmail.store.textindex`: the text the full-text index holds, and the shortcut for one-part messages."""

from __future__ import annotations

import email.parser
import email.policy
from email.message import Message
from pathlib import Path
from unittest.mock import patch

from hypothesis import example, given, settings
from hypothesis import strategies as st

from kinmail.store import textindex
from kinmail.store.index import FTS_AUTOMERGE, open_index
from kinmail.store.textindex import extract_text, query_form, squeeze

HEADER_LINES = st.sampled_from(
    [
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus  Wien",
        b"From: Bob <bob@example.test>",
        b"Content-Type: text/plain; charset=iso-8859-1",
        b"Content-Type: text/plain; charset=x-unknown",
        b"Content-Type: text/html; charset=utf-8",
        b"Content-Type: application/pdf",
        b'Content-Type: multipart/mixed; boundary="b1"',
        b"Content-Type: message/rfc822",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Transfer-Encoding: base64",
        b"Content-Disposition: attachment; filename=a.txt",
        b"\tfolded on",
        b" folded too",
        b"no colon on this line",
        b"X-Empty:",
        b"From nobody Mon Jan  1 00:00:00 2001",
    ]
)
BODY_PIECES = st.one_of(
    st.sampled_from(
        [b"--b1", b"--b1--", b"Content-Type: text/plain", b"=C3=A9t=C3=A9=", b"w6l0w6k=", b"<p>a&amp;b</p>"]
    ),
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda t: t.encode("utf-8")),
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    head = b"\r\n".join(draw(st.lists(HEADER_LINES, max_size=8)))
    body = draw(st.sampled_from([b"\r\n", b"\n", b"\r"])).join(draw(st.lists(BODY_PIECES, max_size=8)))
    return head + draw(st.sampled_from([b"\r\n\r\n", b"\r\n", b"\n\n", b""])) + body


def _whole(data: bytes) -> Message:
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)


@settings(max_examples=400)
@given(messages())
@example(b"Subject: x\r\n\r\nbody\r\n")
@example(b"\r\n\r\nno header at all")
@example(b"Subject: a\r\nno colon\r\n\r\nbody")
@example(b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nw6l0w6k=\r\n")
@example(b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner text\r\n")
@example(b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n\r\ninner\r\n--b1--\r\n')
def test_one_part_messages_read_as_the_whole_parser_reads_them(data: bytes) -> None:
    shortcut = extract_text(data)
    with patch.object(textindex, "_parse", _whole):
        assert shortcut == extract_text(data)


def test_the_text_has_its_white_space_squeezed() -> None:
    headers, body = extract_text(
        b"Subject: annual\r\n  general\tmeeting\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<p>minutes&nbsp; of the</p>\r\n<p>last   meeting</p>\r\n"
    )
    assert headers == "Subject: annual general meeting\nContent-Type: text/html; charset=utf-8"
    assert body == "minutes of the last meeting"


def test_a_query_keeps_one_space_at_either_end() -> None:
    assert squeeze("  a \r\n b\t") == "a b"
    assert query_form("a  \r\nb") == "a b"
    assert query_form("  cat") == " cat"
    assert query_form("cat\t") == "cat "
    assert query_form(" \t ") == " "
    assert query_form("") == ""


def test_an_index_made_before_gets_the_full_text_merge_setting(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    conn, fresh = open_index(path)
    assert fresh
    conn.execute("DELETE FROM fts_config WHERE k = 'automerge'")  # as an index of an earlier version has it
    conn.close()
    conn, fresh = open_index(path)
    assert not fresh
    assert conn.execute("SELECT v FROM fts_config WHERE k = 'automerge'").fetchone() == (FTS_AUTOMERGE,)
    conn.close()
