"""SASL PLAIN (RFC 4616) and base64 responses (RFC 4954 §4): what clients send decodes, malformed input is a
ValueError, never anything else."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinmail.auth import sasl


def test_plain_as_clients_send_it() -> None:
    data = sasl.decode_b64(base64.b64encode("\0alice@example.test\0pässword".encode()).decode())
    assert sasl.decode_plain(data) == ("", "alice@example.test", "pässword")
    assert sasl.decode_plain(b"admin\0alice\0pw") == ("admin", "alice", "pw")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"alice",
        b"\0alice",
        b"\0\0pw",
        b"\0alice\0",
        b"a\0b\0c\0d",
        b"\0al\xffice\0pw",
        b"\0" + b"a" * 256 + b"\0pw",
    ],
)
def test_malformed_plain_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        sasl.decode_plain(data)


def test_base64_is_strict_and_equals_sign_is_empty() -> None:
    assert sasl.decode_b64("=") == b""
    assert sasl.decode_b64(b"YWxpY2U=") == b"alice"
    for bad in ("not base64!", "YWxpY2U", "é"):
        with pytest.raises(ValueError):
            sasl.decode_b64(bad)


def test_login_mechanism_challenges() -> None:
    assert base64.b64decode(sasl.LOGIN_USERNAME_CHALLENGE) == b"Username:"
    assert base64.b64decode(sasl.LOGIN_PASSWORD_CHALLENGE) == b"Password:"
    assert sasl.decode_login_field(sasl.encode_b64("bob@example.test")) == "bob@example.test"


@given(st.binary(max_size=600))
def test_decode_plain_only_ever_raises_value_error(data: bytes) -> None:
    try:
        authzid, authcid, password = sasl.decode_plain(data)
    except ValueError:
        return
    assert authcid and password
    assert (authzid + "\0" + authcid + "\0" + password).encode() == data


@given(st.text(max_size=100))
def test_decode_b64_only_ever_raises_value_error(text: str) -> None:
    try:
        sasl.decode_b64(text)
    except ValueError:
        pass
