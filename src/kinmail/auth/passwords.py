"""Password hashes as Dovecot writes them: `{SCHEME}data`, so that users move over with their passwords.

New passwords are hashed with argon2id (`{ARGON2ID}$argon2id$...`). Verification understands the schemes of
Dovecot's password-scheme list that people actually have in their passwd-files: ARGON2ID, ARGON2I, BLF-CRYPT
(bcrypt), SHA512-CRYPT, SHA256-CRYPT, MD5-CRYPT, CRYPT (the `$id$` forms), SSHA512, SSHA256, SSHA, SHA512,
SHA256, SHA (SHA1), PLAIN and CLEAR; the salted and unsalted SHA schemes also as `.HEX` and `.B64`.

Called by the users file parser (to reject unknown schemes), the authenticator (verification, in a worker
thread: the slow schemes take tens of milliseconds) and `kinmail user add|passwd`. Keeps nothing on disk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable

import argon2
import bcrypt
from passlib.hash import md5_crypt, sha256_crypt, sha512_crypt

_HASHER = argon2.PasswordHasher()  # argon2id, RFC 9106 second recommended option (t=3, m=64 MiB, p=4)

_DIGESTS: dict[str, Callable[..., hashlib._Hash]] = {
    "SHA512": hashlib.sha512,
    "SHA256": hashlib.sha256,
    "SHA": hashlib.sha1,
    "SHA1": hashlib.sha1,
}


def hash_password(password: str) -> str:
    """A new `{ARGON2ID}` hash of `password`."""
    return "{ARGON2ID}" + _HASHER.hash(password)


def split_scheme(stored: str) -> tuple[str, str]:
    """(`SCHEME`, data) of a stored hash. A hash without `{SCHEME}` is CRYPT, Dovecot's passwd-file default."""
    if stored.startswith("{"):
        end = stored.find("}")
        if end > 1:
            return stored[1:end].upper(), stored[end + 1 :]
    return "CRYPT", stored


def _crypt_verify(data: str, password: str) -> bool:
    """The crypt(3) `$id$` formats Dovecot's CRYPT scheme hands to libc."""
    if data.startswith(("$2a$", "$2b$", "$2y$", "$2x$")):
        return _bcrypt_verify(data, password)
    if data.startswith("$6$"):
        return bool(sha512_crypt.verify(password, data))
    if data.startswith("$5$"):
        return bool(sha256_crypt.verify(password, data))
    if data.startswith("$1$"):
        return bool(md5_crypt.verify(password, data))
    if data.startswith("$argon2"):
        return _argon2_verify(data, password)
    raise ValueError("unsupported crypt(3) format (use $6$, $5$, $2y$ or $argon2id$)")


def _argon2_verify(data: str, password: str) -> bool:
    try:
        return _HASHER.verify(data, password)
    except argon2.exceptions.VerifyMismatchError:
        return False
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError) as exc:
        raise ValueError(f"malformed argon2 hash: {exc}") from None


def _bcrypt_verify(data: str, password: str) -> bool:
    secret = password.encode("utf-8")
    if len(secret) > 72:  # bcrypt only ever looked at the first 72 bytes; bcrypt 5 refuses longer input
        secret = secret[:72]
    try:
        return bcrypt.checkpw(secret, data.encode("ascii"))
    except ValueError as exc:
        raise ValueError(f"malformed bcrypt hash: {exc}") from None


def _decode(data: str, encoding: str) -> bytes:
    try:
        if encoding == "HEX":
            return bytes.fromhex(data)
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"malformed {encoding.lower()} data: {exc}") from None


def _sha_verify(scheme: str, data: str, password: str, encoding: str) -> bool:
    salted = scheme.startswith("S") and scheme[1:] in _DIGESTS
    digest = _DIGESTS[scheme[1:] if salted else scheme]
    size = digest().digest_size
    raw = _decode(data, encoding)
    secret = password.encode("utf-8")
    if salted:
        if len(raw) <= size:
            raise ValueError("salted hash too short")
        expected, salt = raw[:size], raw[size:]
        return hmac.compare_digest(digest(secret + salt).digest(), expected)
    if len(raw) != size:
        raise ValueError("hash has the wrong length")
    return hmac.compare_digest(digest(secret).digest(), raw)


def _check(scheme: str, encoding: str | None, data: str, password: str) -> bool:
    if scheme in {"ARGON2ID", "ARGON2I"}:
        expected = "$argon2id$" if scheme == "ARGON2ID" else "$argon2i$"
        if not data.startswith(expected):
            raise ValueError(f"{{{scheme}}} data does not start with {expected}")
        return _argon2_verify(data, password)
    if scheme == "BLF-CRYPT":
        return _bcrypt_verify(data, password)
    if scheme == "SHA512-CRYPT":
        return bool(sha512_crypt.verify(password, data))
    if scheme == "SHA256-CRYPT":
        return bool(sha256_crypt.verify(password, data))
    if scheme == "MD5-CRYPT":
        return bool(md5_crypt.verify(password, data))
    if scheme == "CRYPT":
        return _crypt_verify(data, password)
    if scheme in {"PLAIN", "CLEAR"}:
        if encoding is not None:
            data = _decode(data, encoding).decode("utf-8", errors="replace")
        return hmac.compare_digest(data.encode("utf-8"), password.encode("utf-8"))
    if scheme in _DIGESTS or (scheme.startswith("S") and scheme[1:] in _DIGESTS):
        return _sha_verify(scheme, data, password, encoding or "B64")
    raise ValueError(f"unknown password scheme {{{scheme}}}")


KNOWN_SCHEMES = frozenset(
    {
        "ARGON2ID",
        "ARGON2I",
        "BLF-CRYPT",
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "MD5-CRYPT",
        "CRYPT",
        "PLAIN",
        "CLEAR",
        *_DIGESTS,
        *(f"S{name}" for name in _DIGESTS),
    }
)


def _parse(stored: str) -> tuple[str, str | None, str]:
    scheme, data = split_scheme(stored)
    encoding: str | None = None
    base, dot, suffix = scheme.rpartition(".")
    if dot and suffix in {"HEX", "B64", "BASE64"}:
        scheme, encoding = base, ("HEX" if suffix == "HEX" else "B64")
    return scheme, encoding, data


def check_stored(stored: str) -> str | None:
    """Why `stored` cannot be used as a password hash, or None when it looks usable (for the users file)."""
    scheme, _encoding, data = _parse(stored)
    if scheme not in KNOWN_SCHEMES:
        return f"unknown password scheme {{{scheme}}}"
    if scheme == "CRYPT" and not data.startswith(("$1$", "$5$", "$6$", "$2a$", "$2b$", "$2y$", "$argon2")):
        if stored.startswith("{"):
            return "unsupported crypt(3) format (use $6$, $5$, $2y$ or $argon2id$)"
        return "password has no {SCHEME} prefix and is not a crypt(3) hash"
    try:
        _validate(scheme, _encoding, data)
    except ValueError as exc:
        return str(exc)
    return None


_BCRYPT = re.compile(r"^\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}$")


def _validate(scheme: str, encoding: str | None, data: str) -> None:
    """Cheap structural checks (no hashing): raise ValueError saying what is wrong."""
    if scheme in {"ARGON2ID", "ARGON2I"}:
        expected = "$argon2id$" if scheme == "ARGON2ID" else "$argon2i$"
        if not data.startswith(expected):
            raise ValueError(f"{{{scheme}}} data does not start with {expected}")
        try:
            argon2.extract_parameters(data)
        except argon2.exceptions.InvalidHashError:
            raise ValueError("malformed argon2 hash") from None
    elif scheme == "BLF-CRYPT" or (scheme == "CRYPT" and data.startswith("$2")):
        if not _BCRYPT.match(data):
            raise ValueError("malformed bcrypt hash")
    elif scheme in {"SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "CRYPT"}:
        handler = {"SHA512-CRYPT": sha512_crypt, "SHA256-CRYPT": sha256_crypt, "MD5-CRYPT": md5_crypt}.get(
            scheme
        )
        if handler is None:
            handler = {"$6$": sha512_crypt, "$5$": sha256_crypt, "$1$": md5_crypt}.get(data[:3])
        if handler is not None:
            try:
                parsed = handler.from_string(data)
            except ValueError:
                parsed = None
            if parsed is None or not getattr(parsed, "checksum", None):
                raise ValueError(f"malformed {scheme} hash")
    elif scheme in _DIGESTS or (scheme.startswith("S") and scheme[1:] in _DIGESTS):
        salted = scheme.startswith("S") and scheme[1:] in _DIGESTS
        size = _DIGESTS[scheme[1:] if salted else scheme]().digest_size
        raw = _decode(data, encoding or "B64")
        if (salted and len(raw) <= size) or (not salted and len(raw) != size):
            raise ValueError(f"{{{scheme}}} hash has the wrong length")


def verify_password(stored: str, password: str) -> bool:
    """True when `password` matches `stored`; False for a mismatch or a hash that cannot be used."""
    if not stored:
        return False
    try:
        return _check(*_parse(stored), password)
    except ValueError:
        return False
