"""Hypothesis for the message parsers: no input makes them raise, and every section is a consistent slice of
the raw message (MIME header + body = the part; HEADER + TEXT = an encapsulated message)."""

from __future__ import annotations

import base64
import encodings.aliases

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kinmail.message import (
    Message,
    Part,
    SortItem,
    UnknownTransferEncoding,
    base_subject,
    binary_bytes,
    bodystructure,
    decode_words,
    envelope,
    header_contains,
    parse_addresses,
    render_threads,
    section_bytes,
    sort_ids,
    text_contains,
    thread_ids,
)
from tests.test_message_imaptest import parse_args


def all_paths(msg: Message) -> list[tuple[tuple[int, ...], Part]]:
    """Every section part number in the message with the part it names (RFC 9051 §6.4.5)."""
    out: list[tuple[tuple[int, ...], Part]] = []

    def message_body(entity: Part, prefix: tuple[int, ...]) -> None:
        if entity.is_multipart:
            for i, child in enumerate(entity.children, 1):
                part(child, (*prefix, i))
        else:
            part(entity, (*prefix, 1))

    def part(p: Part, path: tuple[int, ...]) -> None:
        out.append((path, p))
        if p.is_multipart:
            for i, child in enumerate(p.children, 1):
                part(child, (*path, i))
        elif p.message is not None:
            message_body(p.message, path)

    message_body(msg.root, ())
    return out


def check_message(raw: bytes) -> None:
    msg = Message(raw)
    for extended in (True, False):
        structure = bodystructure(msg, extended=extended)
        assert len(parse_args(structure)) == 1  # one balanced list
    assert len(parse_args(envelope(msg))) == 1
    assert (section_bytes(msg, (), "HEADER") or b"") + (section_bytes(msg, (), "TEXT") or b"") == raw
    for path, part in all_paths(msg):
        assert msg.resolve(path) is part
        body = section_bytes(msg, path)
        mime = section_bytes(msg, path, "MIME")
        assert body is not None and mime is not None
        assert mime + body == raw[part.start : part.end]
        assert 0 <= part.start <= part.body_start <= part.end <= len(raw)
        if part.message is not None:
            header = section_bytes(msg, path, "HEADER")
            text = section_bytes(msg, path, "TEXT")
            assert header is not None and text is not None
            assert header + text == body
            fields = section_bytes(msg, path, "HEADER.FIELDS", ["subject", "from"])
            assert fields is not None and fields.endswith(b"\r\n")
        try:
            decoded = binary_bytes(msg, path)
        except UnknownTransferEncoding:
            pass
        else:
            assert decoded is not None
    for name in ("subject", "from", "to", "x-any"):
        header_contains(msg, name, "a")
    text_contains(msg, "needle", with_headers=True)
    base_subject(msg.header.text("subject") or "")
    parse_addresses(msg.header.value("to"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_any_bytes(raw: bytes) -> None:
    check_message(raw)


_header_names = st.sampled_from(
    ["From", "To", "Cc", "Subject", "Date", "Message-ID", "References", "Content-Type", "X-Junk", "Sender"]
)
_header_values = st.one_of(
    st.text(alphabet=' abc@<>,;:()"\\=?_[].-\t', max_size=30),
    st.sampled_from(
        [
            "a@b.c",
            '"Name, Q" <x@y.z>',
            "g: a@b, c@d;",
            "=?utf-8?q?caf=C3=A9?=",
            "Re: [x] Fwd: y (fwd)",
            "Sat, 24 Mar 2007 23:00:00 +0200",
            "<1@x> <2@x>",
            "text/plain; charset*0*=utf-8''%C3; charset*1=x",
        ]
    ),
)


def _leaf() -> st.SearchStrategy[bytes]:
    ctype = st.sampled_from(
        [
            b"",
            b"Content-Type: text/plain\r\n",
            b"Content-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n",
            b"Content-Type: application/x; name=a\r\nContent-Transfer-Encoding: base64\r\n",
            b"Content-Transfer-Encoding: x-weird\r\n",
        ]
    )
    body = st.sampled_from(
        [b"", b"hello\r\n", b"=41=\r\nb\r\n", b"AAEC\r\nAw==\r\n", b"--not-a-boundary\r\n"]
    )
    return st.tuples(ctype, body).map(lambda t: t[0] + b"\r\n" + t[1])


def _compose(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    def multipart(args: tuple[str, str, list[bytes], bool]) -> bytes:
        boundary, sub, parts, closed = args
        b = boundary.encode()
        out = b"Content-Type: multipart/" + sub.encode() + b'; boundary="' + b + b'"\r\n\r\npreamble\r\n'
        for p in parts:
            out += b"--" + b + b"\r\n" + p + b"\r\n"
        if closed:
            out += b"--" + b + b"--\r\nepilogue\r\n"
        return out

    def rfc822(args: tuple[bytes, bytes]) -> bytes:
        header, inner = args
        return b"Content-Type: message/rfc822\r\n\r\n" + header + inner

    return st.one_of(
        st.tuples(
            st.sampled_from(["b", "bb", "x y", "b1"]),
            st.sampled_from(["mixed", "alternative", "digest"]),
            st.lists(children, max_size=3),
            st.booleans(),
        ).map(multipart),
        st.tuples(_headers(), children).map(rfc822),
    )


def _headers() -> st.SearchStrategy[bytes]:
    return st.lists(st.tuples(_header_names, _header_values), max_size=4).map(
        lambda fields: b"".join(f"{k}: {v}\r\n".encode() for k, v in fields)
    )


_entities = st.recursive(_leaf(), _compose, max_leaves=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_headers(), _entities)
def test_structured_messages(header: bytes, entity: bytes) -> None:
    check_message(header + entity)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_headers(), st.integers(0, 5)), max_size=8))
def test_sort_and_thread_never_fail(specs: list[tuple[bytes, int]]) -> None:
    items = [
        SortItem(i + 1, i + 1, size, float(size), Message(header + b"\r\nbody\r\n"))
        for i, (header, size) in enumerate(specs)
    ]
    for criteria in (["SUBJECT"], ["REVERSE", "DATE"], ["FROM", "CC", "TO"], ["DISPLAYFROM", "DISPLAYTO"]):
        assert sorted(sort_ids(items, criteria)) == [it.id for it in items]
    for algorithm in ("REFERENCES", "ORDEREDSUBJECT"):
        rendered = render_threads(thread_ids(items, algorithm))
        numbers = [int(t) for t in rendered.replace(b"(", b" ").replace(b")", b" ").split()]
        assert sorted(numbers) == [it.id for it in items]


_subject_words = st.lists(
    st.sampled_from(
        ["Re:", "re :", "Fwd:", "FW:", "[list]", "[fwd:", "]", "(fwd)", " ", "\t", "a", "B", "x:", "[", "é"]
    ),
    max_size=10,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_subject_words)
def test_base_subject_is_a_fixed_point(subject: str) -> None:
    base, _ = base_subject(subject)
    assert base_subject(base)[0] == base
    assert base == base.strip(" \t")
    assert "  " not in base


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_address_parser_never_fails(value: bytes) -> None:
    for a in parse_addresses(value):
        assert a.mailbox is not None or a.host is None


_CHARSETS = sorted(
    set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values()) | {"utf-7", "x-junk"}
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_CHARSETS), st.binary(max_size=40))
def test_any_charset_decodes(charset: str, data: bytes) -> None:
    text = base64.b64encode(data).decode()
    assert isinstance(decode_words(f"=?{charset}?b?{text}?="), str)
    msg = Message(f"Content-Type: text/plain; charset={charset}\r\n\r\n".encode() + data)
    text_contains(msg, "x", with_headers=True)
