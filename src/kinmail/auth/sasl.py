"""SASL mechanisms shared by SMTP AUTH, IMAP AUTHENTICATE, POP3 AUTH and ManageSieve AUTHENTICATE (sans-I/O).

PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) are the mechanisms we offer: passwords are stored
hashed, so challenge-response mechanisms such as CRAM-MD5 cannot work. The protocol servers move the base64
lines (RFC 4954 §4, RFC 9051 §6.2.2); this module decodes them. Keeps nothing on disk.
"""

from __future__ import annotations

import base64
import binascii

MECHANISMS = ("PLAIN", "LOGIN")

# The challenges of the LOGIN mechanism, already base64: "Username:" and "Password:".
LOGIN_USERNAME_CHALLENGE = "VXNlcm5hbWU6"
LOGIN_PASSWORD_CHALLENGE = "UGFzc3dvcmQ6"

MAX_FIELD = 255  # RFC 4616 §2: authzid, authcid and passwd are each at most 255 octets


def decode_b64(text: str | bytes) -> bytes:
    """Strict base64 of a client response; "=" is the empty response (RFC 4954 §4). Raises ValueError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("response is not base64") from None
    text = text.strip()
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("response is not base64") from None


def encode_b64(data: bytes | str) -> str:
    """Base64 of a server challenge; empty data is sent as "" (the server sends "+ " / "334 ")."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def _text(field: bytes, what: str) -> str:
    if len(field) > MAX_FIELD:
        raise ValueError(f"{what} is too long")
    try:
        return field.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8") from None


def decode_plain(data: bytes) -> tuple[str, str, str]:
    """(authzid, authcid, password) of a decoded PLAIN response (RFC 4616 §2); raises ValueError.

    `authzid` is "" when the client did not ask to act as someone else.
    """
    parts = data.split(b"\0")
    if len(parts) != 3:
        raise ValueError("PLAIN response must be authzid NUL authcid NUL password")
    authzid, authcid, password = (
        _text(part, name) for part, name in zip(parts, ("authzid", "authcid", "password"), strict=True)
    )
    if not authcid:
        raise ValueError("empty user name")
    if not password:
        raise ValueError("empty password")
    return authzid, authcid, password


def decode_login_field(text: str | bytes, what: str = "user name") -> str:
    """One base64 answer to a LOGIN challenge, as text; raises ValueError."""
    return _text(decode_b64(text), what)
