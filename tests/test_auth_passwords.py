"""Password hashes: every scheme Dovecot's `doveadm pw` wrote (tests/data/dovecot-hashes.txt) verifies, wrong
passwords and malformed hashes do not, and new hashes are argon2id."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kinmail.auth.passwords import check_stored, hash_password, split_scheme, verify_password

DATA = Path(__file__).parent / "data" / "dovecot-hashes.txt"


def _hashes() -> list[tuple[str, str]]:
    rows = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            password, stored = line.split("\t")
            rows.append((password, stored))
    return rows


HASHES = _hashes()


def test_the_test_data_covers_every_scheme_dovecot_users_have() -> None:
    schemes = {split_scheme(stored)[0] for _, stored in HASHES}
    assert {
        "ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT",
        "SSHA512", "SSHA256", "SSHA", "SHA512", "PLAIN", "CLEAR", "SSHA512.HEX",
    } <= schemes  # fmt: skip


@pytest.mark.parametrize(("password", "stored"), HASHES, ids=[s.split("}")[0][1:] for _, s in HASHES])
def test_dovecot_hashes_verify(password: str, stored: str) -> None:
    assert check_stored(stored) is None
    assert verify_password(stored, password)
    assert not verify_password(stored, password + "x")
    if split_scheme(stored)[0].startswith("ARGON2"):
        return  # a quarter of a second per check, all in argon2-cffi: one wrong password says enough
    assert not verify_password(stored, password.upper())
    assert not verify_password(stored, "")


def test_new_hashes_are_argon2id_with_a_fresh_salt() -> None:
    first, second = hash_password("secret"), hash_password("secret")
    assert first.startswith("{ARGON2ID}$argon2id$")
    assert first != second
    assert verify_password(first, "secret") and verify_password(second, "secret")
    assert not verify_password(first, "Secret")


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ("{FOO}abc", "unknown password scheme {FOO}"),
        ("plaintext", "no {SCHEME} prefix"),
        ("{SSHA512}not*base64", "malformed b64"),
        ("{SHA512}c2hvcnQ=", "wrong length"),
        ("{BLF-CRYPT}$2y$05$short", "malformed bcrypt"),
        ("{ARGON2ID}$argon2i$v=19$m=32768,t=4,p=1$c2FsdHNhbHQ$aGFzaGhhc2g", "does not start with $argon2id$"),
        ("{ARGON2ID}$argon2id$garbage", "malformed argon2"),
        ("{SHA512-CRYPT}$6$salt", "malformed SHA512-CRYPT"),
    ],
)
def test_malformed_hashes_are_named_and_never_verify(stored: str, reason: str) -> None:
    problem = check_stored(stored)
    assert problem is not None and reason in problem
    assert not verify_password(stored, "anything")


def test_crypt_without_scheme_prefix_is_read_as_dovecot_does() -> None:
    sha512 = next(s for _, s in HASHES if s.startswith("{SHA512-CRYPT}"))
    password = next(p for p, s in HASHES if s == sha512)
    bare = sha512.removeprefix("{SHA512-CRYPT}")
    assert check_stored(bare) is None
    assert verify_password(bare, password)
    assert verify_password("{CRYPT}" + bare, password)


def test_bcrypt_longer_than_72_bytes_compares_the_first_72() -> None:
    import bcrypt

    long_password = "a" * 100
    stored = "{BLF-CRYPT}" + bcrypt.hashpw(long_password[:72].encode(), bcrypt.gensalt(4)).decode()
    assert verify_password(stored, long_password)


@settings(max_examples=50, deadline=None)
@given(st.text())
def test_verify_never_raises(stored: str) -> None:
    verify_password(stored, "password")
    check_stored(stored)
