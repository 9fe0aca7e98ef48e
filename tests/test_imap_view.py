"""The selected folder's view (`kinmail.imapserver.selected.UidMap`): looked up like a dict, shared between
sessions that selected the folder in the same state, and copied by a session before it changes its own view."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kinmail.imapserver.selected import UidMap, shared_lists
from kinmail.store.types import MessageInfo


def info(uid: int, flags: frozenset[str] = frozenset(), modseq: int = 1) -> MessageInfo:
    return MessageInfo(uid, flags, modseq, 100, 0.0, f"cur/{uid}:2,")


def test_reads_like_a_dict() -> None:
    view = UidMap([2, 5, 9], [info(2), info(5), info(9)])
    assert 5 in view and 4 not in view and "5" not in view
    assert view[9].uid == 9 and view.get(4) is None
    assert [u for u, _ in view.items()] == [2, 5, 9]
    infos, seqs = view.many([1, 2, 3, 9, 10])
    assert [m.uid for m in infos] == [2, 9] and seqs == [1, 3]
    view.append(info(12))
    view.remove(5)
    view.replace(info(2, frozenset({"\\Seen"}), 7))
    view.replace(info(99))  # not in the view: ignored
    assert view.uids == [2, 9, 12]
    assert view[2].flags == {"\\Seen"} and len(view) == 3


@given(st.sets(st.integers(1, 400), max_size=200), st.sets(st.integers(1, 450), max_size=300))
def test_sequence_numbers_of_few_and_of_many_uids(in_view: set[int], asked: set[int]) -> None:
    """A few UIDs are bisected for, many found in one pass over the view: both give the same numbers."""
    uids = sorted(in_view)
    view = UidMap(uids, [info(u) for u in uids])
    expected = [uids.index(u) + 1 for u in sorted(asked) if u in in_view]
    assert view.seqs(sorted(asked)) == expected


def test_sessions_in_the_same_state_share_until_one_changes() -> None:
    key = ("alice@example.test", "INBOX", 1)
    infos = [info(n) for n in range(1, 6)]
    a = shared_lists(key, 10, list(infos))
    b = shared_lists(key, 10, list(infos))
    assert a.uids is b.uids  # one pair of lists for both
    c = shared_lists(key, 11, list(infos))  # the folder changed meanwhile: lists of its own
    assert c.uids is not a.uids
    a.append(info(6))
    a.remove(2)
    a.replace(info(3, frozenset({"\\Flagged"}), 12))
    assert a.uids == [1, 3, 4, 5, 6]
    assert b.uids == [1, 2, 3, 4, 5]  # the other session's view is as it was
    assert b[3].flags == frozenset()
    assert c.uids == [1, 2, 3, 4, 5]


def test_uids_with_a_flag() -> None:
    deleted = frozenset({"\\Deleted"})
    view = UidMap([3, 5, 8, 9], [info(3), info(5, deleted), info(8, frozenset({"\\Seen"})), info(9, deleted)])
    assert view.with_flag("\\Deleted") == [5, 9]
    assert view.with_flag("\\Seen") == [8]
    assert view.with_flag("\\Flagged") == []
    assert UidMap([], []).with_flag("\\Deleted") == []


def test_deleted_uids_are_kept_as_the_view_changes() -> None:
    deleted = frozenset({"\\Deleted"})
    view = UidMap([3, 5, 8], [info(3), info(5, deleted), info(8)])
    assert view.with_flag("\\Deleted") == [5]  # found once, then kept
    view.replace(info(3, deleted | {"\\Seen"}, 2))
    view.replace(info(5, frozenset({"\\Seen"}), 3))  # undeleted
    view.append(info(11, deleted))
    view.append(info(12))
    assert view.with_flag("\\Deleted") == [3, 11]
    view.remove(11)
    view.remove(4)  # not in the view
    assert view.with_flag("\\Deleted") == [3]
    # what the kept set says is what a fresh look says
    fresh = UidMap(list(view.uids), list(view.values()))
    assert fresh.with_flag("\\Deleted") == view.with_flag("\\Deleted")


def test_a_view_that_shares_its_lists_keeps_its_own_deleted_uids() -> None:
    key = ("bob@example.test", "INBOX", 1)
    infos = [info(n) for n in range(1, 4)]
    a = shared_lists(key, 20, list(infos))
    b = shared_lists(key, 20, list(infos))
    assert a.with_flag("\\Deleted") == [] and b.with_flag("\\Deleted") == []
    a.replace(info(2, frozenset({"\\Deleted"}), 21))
    assert a.with_flag("\\Deleted") == [2]
    assert b.with_flag("\\Deleted") == []  # b has not seen the change yet
