"""Unit tests of kinmail.message beyond the imaptest scripts: RFC 5256 base subjects, RFC 2047/2231 decoding,
addresses, BODYSTRUCTURE extension data, sections, BINARY, THREAD corner cases, header building."""

from __future__ import annotations

import pytest

from kinmail.message import (
    Message,
    SortItem,
    UnknownTransferEncoding,
    base_subject,
    binary_bytes,
    bodystructure,
    decode_words,
    envelope,
    fold_field,
    header_contains,
    imap_string,
    parse_addresses,
    prepend_fields,
    render_threads,
    section_bytes,
    sort_ids,
    text_contains,
    thread_ids,
)
from kinmail.message.headers import parse_content_value


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


# --- RFC 5256 §2.1 base subject ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "base", "is_reply"),
    [
        ("Hello", "Hello", False),
        ("Re: Hello", "Hello", True),
        ("RE:Hello", "Hello", True),
        ("Fwd: Re: Hello", "Hello", True),
        ("fw: hello", "hello", True),
        ("Re[2]: Hello", "Hello", True),
        ("Re [list]: Hello", "Hello", True),
        ("[list] Re: Hello", "Hello", True),
        ("[list] Hello", "Hello", False),
        ("[list]", "[list]", False),
        ("Hello (fwd)", "Hello", True),
        ("Hello (fwd) (FWD)  ", "Hello", True),
        ("[fwd: Hello]", "Hello", True),
        ("[Fwd: Re: [list] Hello]", "Hello", True),
        ("Re:   spaced    out  ", "spaced out", True),
        ("Ad: Re: x", "Ad: Re: x", False),
        ("Reply: x", "Reply: x", False),
        ("", "", False),
        ("   ", "", False),
        ("Re: Re: Re:", "", True),
        ("\tRe:\tfolded\r\n subject", "folded subject", True),
    ],
)
def test_base_subject(subject: str, base: str, is_reply: bool) -> None:
    assert base_subject(subject) == (base, is_reply)


# --- header decoding -----------------------------------------------------------------------------------


def test_encoded_words() -> None:
    assert decode_words("=?iso-8859-1?q?caf=E9?=") == "café"
    assert decode_words("=?utf-8?b?w6lsw6h2ZQ==?= =?utf-8?q?_x?=") == "élève x"  # blanks between words go
    assert decode_words("a =?utf-8?q?b?= c") == "a b c"
    assert decode_words("=?utf-8*fr?q?oui?=") == "oui"  # RFC 2231 language
    assert decode_words("=?x-unknown?q?abc?=") == "abc"
    assert decode_words("=?utf-8?b?@@@?=") in ("=?utf-8?b?@@@?=", "")  # broken base64 never raises
    assert decode_words("no words") == "no words"


def test_rfc2231_parameters_as_dovecot_shows_them() -> None:
    head, params = parse_content_value(b'text/plain; charset="us-ascii"; name*0="long "; name*1="name.txt"')
    assert head == b"text/plain"
    assert params == [("charset", "us-ascii"), ("name", "long name.txt")]
    _, params = parse_content_value(b"attachment; filename*0*=utf-8''%E2%82%AC; size=3; filename*1=\" 100%\"")
    assert params == [("size", "3"), ("filename*", "utf-8''%E2%82%AC 100%25")]
    _, params = parse_content_value(b"inline; n*0=a; n*2=c")  # a piece is missing: kept as it was
    assert params == [("n*0", "a"), ("n*2", "c")]
    _, params = parse_content_value(b"inline; FileName*=iso-8859-1'en'caf%E9")
    assert params == [("filename*", "iso-8859-1'en'caf%E9")]
    _, params = parse_content_value(b'text/plain; (comment) charset = utf-8 ; junk; x="a\\"b"')
    assert params == [("charset", "utf-8"), ("x", 'a"b')]


# --- addresses -----------------------------------------------------------------------------------------


def test_addresses() -> None:
    got = parse_addresses(b'"Doe, John" <john@example.org>, jane@example.org (Jane), <@a,@b:x@y>')
    assert [(a.name, a.route, a.mailbox, a.host) for a in got] == [
        (b"Doe, John", None, b"john", b"example.org"),
        (b"Jane", None, b"jane", b"example.org"),
        (None, b"@a,@b", b"x", b"y"),
    ]
    got = parse_addresses(b"undisclosed-recipients:;")
    assert [(a.mailbox, a.host) for a in got] == [(b"undisclosed-recipients", None), (None, None)]
    assert parse_addresses(b"") == []
    assert parse_addresses(b",,,") == []
    assert parse_addresses(b"=?utf-8?q?J=C3=B6rg?= <j@x.de>")[0].display_name == "Jörg"


def test_rfc5322_appendix_a_addresses() -> None:
    got = parse_addresses(
        b"A Group(Some people):Chris Jones <c@(Chris's host.)public.example>, joe@example.org,"
        b" John <jdoe@one.test> (my dear friend); (the end of the group)"
    )
    assert [(a.name, a.mailbox, a.host) for a in got] == [
        (None, b"A Group", None),
        (b"Chris Jones", b"c", b"public.example"),
        (None, b"joe", b"example.org"),
        (b"John", b"jdoe", b"one.test"),
        (None, None, None),
    ]
    got = parse_addresses(b"Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>")
    assert [(a.name, a.mailbox, a.host) for a in got] == [(b"Pete", b"pete", b"silly.test")]
    got = parse_addresses(
        b'"Joe Q. Public" <john.q.public@example.com>, Mary Smith <mary@x.test>, Who? <one@y.test>'
    )
    assert [a.name for a in got] == [b"Joe Q. Public", b"Mary Smith", b"Who?"]


def test_envelope_quotes_and_literals() -> None:
    msg = Message(crlf('From: "A \\"B\\"" <a@b>\nSubject: caf\xe9\nMessage-ID: <1@x>\n\nbody\n'))
    env = envelope(msg)
    assert env.startswith(b'(NIL {5}\r\ncaf\xc3\xa9 (("A \\"B\\"" NIL "a" "b"))')
    assert env.endswith(b'NIL NIL NIL NIL "<1@x>")')
    utf8 = envelope(msg, utf8=True)
    assert b'"caf\xc3\xa9"' in utf8
    missing = envelope(Message(crlf("From: d, <>\n\n")))
    assert b'(NIL NIL "d" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")' in missing


def test_imap_string() -> None:
    assert imap_string(b"plain") == b'"plain"'
    assert imap_string(b'a"b\\c') == b'"a\\"b\\\\c"'
    assert imap_string(b"two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert imap_string("é") == b"{2}\r\n\xc3\xa9"
    assert imap_string("é", utf8=True) == b'"\xc3\xa9"'
    assert imap_string(b"\xff", utf8=True) == b"{1}\r\n\xff"


# --- BODYSTRUCTURE -------------------------------------------------------------------------------------

RICH = crlf(
    """From: a@b.example
Subject: rich
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"; x-extra=1
Content-Language: en, de
Content-Location: http://example.org/

preamble
--outer
Content-Type: text/plain; charset=utf-8; format=flowed
Content-ID: <part1@x>
Content-Description: The text
Content-Transfer-Encoding: quoted-printable
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==
Content-Language: fr

caf=C3=A9 =
ok
--outer
Content-Type: application/octet-stream; name=data.bin
Content-Disposition: attachment; filename="data.bin"; size=4
Content-Transfer-Encoding: base64

AAECAw==
--outer
Content-Type: text/html
Content-Transfer-Encoding: x-uuencode

begin
--outer--
epilogue
"""
)


def test_bodystructure_extension_data() -> None:
    msg = Message(RICH)
    assert bodystructure(msg) == (
        b'(("text" "plain" ("charset" "utf-8" "format" "flowed") "<part1@x>" "The text" "quoted-printable" 15 1'
        b' "Q2hlY2sgSW50ZWdyaXR5IQ==" NIL ("fr") NIL)'
        b'("application" "octet-stream" ("name" "data.bin") NIL NIL "base64" 8'
        b' NIL ("attachment" ("filename" "data.bin" "size" "4")) NIL NIL)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "x-uuencode" 5 0 NIL NIL NIL NIL)'
        b' "mixed" ("boundary" "outer" "x-extra" "1") NIL ("en" "de") "http://example.org/")'
    )
    assert bodystructure(msg, extended=False) == (
        b'(("text" "plain" ("charset" "utf-8" "format" "flowed") "<part1@x>" "The text" "quoted-printable" 15 1)'
        b'("application" "octet-stream" ("name" "data.bin") NIL NIL "base64" 8)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "x-uuencode" 5 0) "mixed")'
    )


def test_binary_decodes_and_refuses_unknown_encodings() -> None:
    msg = Message(RICH)
    assert binary_bytes(msg, (1,)) == "café ok".encode()
    assert binary_bytes(msg, (2,)) == b"\x00\x01\x02\x03"
    with pytest.raises(UnknownTransferEncoding):
        binary_bytes(msg, (3,))
    assert binary_bytes(msg, (4,)) is None
    assert binary_bytes(msg, ()) == RICH


def test_sections_that_do_not_exist_are_none() -> None:
    msg = Message(RICH)
    assert section_bytes(msg, (4,)) is None
    assert section_bytes(msg, (1, 1)) is None
    assert section_bytes(msg, (1,), "HEADER") is None  # not a message/rfc822 part
    assert section_bytes(msg, (0,)) is None
    assert section_bytes(msg, (), "MIME") is None
    assert section_bytes(msg, (), "HEADER.FIELDS", ["subject", "X-None"]) == b"Subject: rich\r\n\r\n"
    single = Message(crlf("Subject: x\n\nbody\n"))
    assert section_bytes(single, (1,)) == b"body\r\n"
    assert section_bytes(single, (2,)) is None
    assert section_bytes(single, (1,), "MIME") == b"Subject: x\r\n\r\n"


def test_bare_lf_and_headerless_messages() -> None:
    msg = Message(
        b"Subject: lf\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\nX: y\n\ntwo\n--b--\n"
    )
    assert section_bytes(msg, (1,)) == b"one"
    assert section_bytes(msg, (2,)) == b"two"
    assert section_bytes(msg, (2,), "MIME") == b"X: y\n\n"
    empty = Message(b"")
    assert (
        bodystructure(empty) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
    )
    assert envelope(empty) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    no_body = Message(b"Subject: only a header")
    assert section_bytes(no_body, (), "TEXT") == b""
    assert section_bytes(no_body, (), "HEADER") == b"Subject: only a header"


def test_multipart_without_parts_still_has_one() -> None:
    msg = Message(crlf("Content-Type: multipart/mixed; boundary=zz\n\nno parts at all\n"))
    assert bodystructure(msg, extended=False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")'
    )


def test_boundary_prefix_of_another() -> None:
    msg = Message(
        crlf(
            "Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/mixed; boundary=ab\n\n"
            "--ab\n\ninner\n--ab--\n--a\n\nsecond\n--a--\n"
        )
    )
    assert section_bytes(msg, (1, 1)) == b"inner"
    assert section_bytes(msg, (2,)) == b"second"


# --- SEARCH --------------------------------------------------------------------------------------------


def test_search_helpers() -> None:
    msg = Message(RICH)
    assert header_contains(msg, "subject", "RICH")
    assert header_contains(msg, "from", "b.EXAMPLE")
    assert not header_contains(msg, "to", "")
    assert text_contains(msg, "CAFÉ", with_headers=False)  # quoted-printable and UTF-8 undone
    assert not text_contains(msg, "preamble", with_headers=False)
    assert text_contains(msg, "rich", with_headers=True)
    assert not text_contains(msg, "rich", with_headers=False)


# --- SORT and THREAD -----------------------------------------------------------------------------------


def _items(*headers: str) -> list[SortItem]:
    return [
        SortItem(i + 1, i + 1, 100 + i, 1000.0 + i, Message(crlf(h + "\n\nbody\n")))
        for i, h in enumerate(headers)
    ]


def test_sort_criteria() -> None:
    items = _items("Subject: b\nCc: z@x", "Subject: a\nCc: y@x", "Subject: Re: a\nCc: y@x")
    assert sort_ids(items, ["SUBJECT"]) == [2, 3, 1]
    assert sort_ids(items, ["REVERSE", "SUBJECT"]) == [1, 2, 3]
    assert sort_ids(items, ["CC", "REVERSE", "ARRIVAL"]) == [3, 2, 1]
    assert sort_ids(items, ["REVERSE", "SIZE"]) == [3, 2, 1]
    for bad in ([], ["REVERSE"], ["NOPE"], ["REVERSE", "REVERSE", "DATE"]):
        with pytest.raises(ValueError):
            sort_ids(items, bad)


def test_thread_references_subject_merge_and_dummies() -> None:
    items = _items(
        "Message-ID: <1@x>\nSubject: topic",
        "Message-ID: <2@x>\nSubject: other",
        "Message-ID: <3@x>\nSubject: Re: topic",  # no references: joined by subject under 1
        "Message-ID: <4@x>\nIn-Reply-To: <2@x>\nSubject: Re: other",
        "Message-ID: <5@x>\nReferences: <gone@x>\nSubject: lost",
        "Message-ID: <6@x>\nReferences: <gone@x>\nSubject: lost",
    )
    assert render_threads(thread_ids(items, "REFERENCES")) == b"(1 3)(2 4)((5)(6))"
    assert render_threads(thread_ids(items, "orderedsubject")) == b"(1 3)(2 4)(5 6)"
    with pytest.raises(ValueError):
        thread_ids(items, "X")


def test_thread_self_reference_and_loops() -> None:
    items = _items(
        "Message-ID: <a@x>\nReferences: <a@x>",
        "Message-ID: <b@x>\nReferences: <c@x> <b@x>",
        "Message-ID: <c@x>\nReferences: <b@x>",
    )
    assert render_threads(thread_ids(items, "REFERENCES")) == b"(1)(2 3)"


def test_thread_deep_chain_does_not_recurse() -> None:
    n = 3000
    items = _items(*[f"Message-ID: <{i}@x>" + (f"\nIn-Reply-To: <{i - 1}@x>" if i else "") for i in range(n)])
    out = render_threads(thread_ids(items, "REFERENCES"))
    assert out == b"(" + b" ".join(str(i).encode() for i in range(1, n + 1)) + b")"


# --- building ------------------------------------------------------------------------------------------


def test_fold_and_prepend() -> None:
    value = " ".join(["word"] * 40)
    folded = fold_field("X-Long", value)
    lines = folded.split(b"\r\n")
    assert lines[-1] == b""
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith(b" ") for line in lines[1:-1])
    assert b"".join(folded.split(b"\r\n")) == b"X-Long: " + value.encode()
    assert fold_field("A", "b\r\nc") == b"A: b c\r\n"
    msg = prepend_fields(b"Subject: s\r\n\r\nbody", [("Received", "from x"), ("X-Two", "2")])
    assert msg == b"Received: from x\r\nX-Two: 2\r\nSubject: s\r\n\r\nbody"
    assert Message(msg).header.text("x-two") == "2"


def test_bodystructure_fields_as_dovecot_writes_them() -> None:
    msg = Message(
        crlf(
            'Content-Type: application/pdf; name="a\n\tb.pdf"\nContent-Transfer-Encoding: Base64 (comment)\n'
            "Content-Description:  two\n\t  lines \nContent-Disposition: inline\n\nAAAA\n"
        )
    )
    assert bodystructure(msg) == (
        b'("application" "pdf" ("name" "a b.pdf") NIL "two lines" "Base64" 6 NIL ("inline" NIL) NIL NIL)'
    )
