"""Folder names: modified UTF-7 (RFC 3501 §5.1.3), Maildir++ directories, and names that must be refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinmail.store import InvalidFolderName, Store, UserMailboxes, decode_mutf7, encode_mutf7
from kinmail.store.names import check_name, folder_dir_name, name_from_dir


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("日本語", "&ZeVnLIqe-"),  # RFC 3501 §5.1.3
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3
        ("A&B", "A&-B"),
        ("Entwürfe", "Entw&APw-rfe"),  # as Dovecot writes German Drafts
        ("Gesendete Objekte", "Gesendete Objekte"),
        ("😀", "&2D3eAA-"),  # outside the BMP: a surrogate pair
    ],
)
def test_known_encodings(text: str, encoded: str) -> None:
    assert encode_mutf7(text) == encoded
    assert decode_mutf7(encoded) == text


@given(st.text())
def test_mutf7_round_trip(text: str) -> None:
    encoded = encode_mutf7(text)
    assert all(0x20 <= ord(c) <= 0x7E for c in encoded)
    assert decode_mutf7(encoded) == text


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_decode_accepts_only_canonical_forms(encoded: str) -> None:
    try:
        text = decode_mutf7(encoded)
    except InvalidFolderName:
        return
    assert encode_mutf7(text) == encoded


@pytest.mark.parametrize(
    "odd",
    [
        "&AGE-",  # "a" must be written directly
        "&ZeVnLIqe",  # not terminated
        "&ZeVnLIqe-&ZeVnLIqe-",  # two shifts in a row must be one
        "&Ze-",  # bits left over
        "&ZeV/LIqe-",  # "/" is "," in modified base64
        "&2D0-",  # a lone surrogate
        "a\x01b",  # control character
    ],
)
def test_odd_modified_utf7_refused(odd: str) -> None:
    with pytest.raises(InvalidFolderName):
        decode_mutf7(odd)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "..",
        "a/../b",
        "/etc",
        "a//b",
        "a/",
        "~root",
        "x/~y",
        "a.b",
        ".hidden",
        "nul\x00here",
        "tab\there",
        "new\nline",
        "del\x7f",
        "star*",
        "per%cent",
        "back\\slash",
        " lead",
        "x" * 300,
        "/".join(["a" * 50] * 6),
    ],
)
def test_names_that_could_escape_or_confuse_are_refused(bad: str) -> None:
    with pytest.raises(InvalidFolderName):
        check_name(bad)


def test_directory_mapping() -> None:
    assert folder_dir_name("INBOX") == ""
    assert folder_dir_name("inbox") == ""
    assert folder_dir_name("Sent") == ".Sent"
    assert folder_dir_name("Archiv/2024/März") == ".Archiv.2024.M&AOQ-rz"
    assert name_from_dir(".Archiv.2024.M&AOQ-rz") == "Archiv/2024/März"
    assert name_from_dir(".M&AOQ-rz&AGE-") is None
    assert name_from_dir("..") is None
    assert name_from_dir(".&AAA-") is None  # NUL, encoded
    assert name_from_dir(".a..b") is None
    assert check_name("Inbox/Sub") == "INBOX/Sub"


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12),
        min_size=1,
        max_size=4,
    )
)
def test_dir_names_round_trip(parts: list[str]) -> None:
    name = "/".join(parts)
    try:
        name = check_name(name)
    except InvalidFolderName:
        return
    if name == "INBOX":
        return
    dirname = folder_dir_name(name)
    assert dirname.startswith(".") and "/" not in dirname and "\x00" not in dirname
    assert name_from_dir(dirname) == name


@pytest.fixture
def mb(tmp_path: Path) -> Iterator[UserMailboxes]:
    store = Store(tmp_path / "mail", tmp_path / "index")
    yield store.mailboxes("alice@example.test")
    store.close()


@pytest.mark.parametrize("bad", ["../../bob", "../x", "/abs", "~/x", "a.b", "x\x00y", "a\x1bb"])
def test_store_refuses_attacks_and_writes_nothing_outside(
    mb: UserMailboxes, tmp_path: Path, bad: str
) -> None:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidFolderName):
        mb.create_folder(bad)
    with pytest.raises(InvalidFolderName):
        mb.open(bad)
    with pytest.raises(InvalidFolderName):
        mb.rename_folder("Sent", bad)
    with pytest.raises(InvalidFolderName):
        mb.deliver(bad, b"Subject: x\r\n\r\nx\r\n", create=True)
    after = sorted(
        p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "-wal" not in p.name and "-shm" not in p.name
    )
    assert after == [p for p in before if "-wal" not in p.name and "-shm" not in p.name]


def test_unicode_folder_stored_as_dovecot_does(mb: UserMailboxes) -> None:
    mb.create_folder("Entwürfe")
    assert (mb.root / ".Entw&APw-rfe" / "cur").is_dir()
    assert "Entwürfe" in [f.name for f in mb.folders()]
    # a folder another program made with odd modified UTF-7 is not shown
    (mb.root / ".bad&AGE-" / "cur").mkdir(parents=True)
    assert all("bad" not in f.name for f in mb.folders())
