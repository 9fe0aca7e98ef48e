"""The FETCH rendering cache (`imapserver.render`): one entry per message holding its ENVELOPE, BODY,
BODYSTRUCTURE and header renderings, bounded by what the entries hold in memory, least recently used first out."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from kinmail.imapserver import render


@pytest.fixture
def small_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(render, "_CACHE", type(render._CACHE)())
    monkeypatch.setattr(render, "_cache_bytes", 0)
    monkeypatch.setattr(
        render, "CACHE_BYTES", 20 * (render.ENTRY_OVERHEAD + 3 * (render.VALUE_OVERHEAD + 100))
    )
    yield


def message(n: int) -> render.Rendered:
    return render.Rendered(f"From: a{n}@example.test\r\nSubject: message {n}\r\n\r\nbody {n}\r\n".encode())


def accounted() -> int:
    return sum(
        render.ENTRY_OVERHEAD + sum(len(v) + render.VALUE_OVERHEAD for v in entry if v is not None)
        for entry in render._CACHE.values()
    )


def test_renderings_of_a_message_share_one_entry_and_are_served_without_the_file(small_cache: None) -> None:
    folder = render.folder_key("alice@example.test", "INBOX", 7)
    assert render.folder_key("alice@example.test", "INBOX", 7) == folder
    assert render.folder_key("alice@example.test", "INBOX", 8) != folder
    msg = message(1)
    envelope = render.simple((folder, 1), msg, "ENVELOPE")
    structure = render.simple((folder, 1), msg, "BODYSTRUCTURE")
    header = render.header((folder, 1), msg)
    assert header.startswith(b"From: a1@example.test") and header.endswith(b"\r\n\r\n")
    assert len(render._CACHE) == 1
    assert render._cache_bytes == accounted()
    assert render.simple((folder, 1), None, "ENVELOPE") == envelope
    assert render.simple((folder, 1), None, "BODYSTRUCTURE") == structure
    assert render.header((folder, 1), None) == header
    with pytest.raises(render.NeedsFile):  # the UTF8=ACCEPT rendering is its own slot
        render.simple((folder, 1), None, "ENVELOPE", utf8=True)


def test_the_cache_stays_within_its_bound_and_drops_the_least_recently_used(small_cache: None) -> None:
    folder = render.folder_key("bob@example.test", "INBOX", 1)
    for uid in range(1, 200):
        msg = message(uid)
        render.simple((folder, uid), msg, "ENVELOPE")
        render.header((folder, uid), msg)
        if uid > 2:
            render.simple((folder, 2), None, "ENVELOPE")  # message 2 stays in use
        assert render._cache_bytes == accounted() <= render.CACHE_BYTES
    assert (folder, 1) not in render._CACHE
    assert (folder, 2) in render._CACHE and (folder, 199) in render._CACHE
    assert 10 < len(render._CACHE) < 60
    # the bookkeeping is close to what the entries really take
    entry = render._CACHE[folder, 199]
    real = sys.getsizeof(entry) + sys.getsizeof((folder, 199)) + sum(sys.getsizeof(v) for v in entry if v)
    assert real < render.ENTRY_OVERHEAD + sum(len(v) + render.VALUE_OVERHEAD for v in entry if v)
