"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §3), and their `(1 2)(3 (4)(5))` rendering.

The IMAP server builds `SortItem`s (see `kinmail.message.sort`) for the messages a THREAD command's search
matched and calls `thread_ids` then `render_threads`. Pure; nothing is kept on disk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from kinmail.message.sort import SortItem, base_subject, casemap, decoded_subject

__all__ = ["THREAD_ALGORITHMS", "ThreadNode", "render_threads", "thread_ids"]

THREAD_ALGORITHMS = frozenset({"ORDEREDSUBJECT", "REFERENCES"})

_MSGID = re.compile(rb"<([^<>]*)>")


@dataclass
class ThreadNode:
    """A message (`id`) or, for `id` None, a dummy that only groups its children."""

    id: int | None
    children: list[ThreadNode] = field(default_factory=list)


def render_threads(threads: Sequence[ThreadNode]) -> bytes:
    """RFC 5256 §4 thread-list: `(3 6 (4 23)(44 7 96))`; a chain of single children stays flat."""
    out = bytearray()
    stack: list[ThreadNode | bytes] = []
    for t in reversed(threads):
        stack += [b")", t, b"("]
    while stack:
        top = stack.pop()
        if isinstance(top, bytes):
            out += top
            continue
        node = top
        words: list[bytes] = []
        while True:
            if node.id is not None:
                words.append(str(node.id).encode())
            if len(node.children) == 1 and node.id is not None:
                node = node.children[0]
                continue
            break
        out += b" ".join(words)
        if node.children and words:
            out += b" "
        for child in reversed(node.children):
            stack += [b")", child, b"("]
    return bytes(out)


def thread_ids(items: Sequence[SortItem], algorithm: str) -> list[ThreadNode]:
    """Thread the messages; ValueError for an algorithm we do not know."""
    algo = algorithm.upper()
    if algo == "ORDEREDSUBJECT":
        return _ordered_subject(items)
    if algo == "REFERENCES":
        return _references(items)
    raise ValueError(f"unknown thread algorithm {algorithm}")


def _ordered_subject(items: Sequence[SortItem]) -> list[ThreadNode]:
    """RFC 5256 §3 ORDEREDSUBJECT: sort by base subject then sent date; each run of one subject is a thread
    whose first message is the parent of all the others; threads ordered by their first message's date."""
    ordered = sorted(items, key=lambda it: (it.subject_key, it.sent, it.seq))
    groups: list[list[SortItem]] = []
    for it in ordered:
        if groups and groups[-1][0].subject_key == it.subject_key:
            groups[-1].append(it)
        else:
            groups.append([it])
    groups.sort(key=lambda g: (g[0].sent, g[0].seq))
    return [ThreadNode(g[0].id, [ThreadNode(it.id) for it in g[1:]]) for g in groups]


# --- REFERENCES ------------------------------------------------------------------------------------


class _Box:
    """A container of RFC 5256 §3 REFERENCES step 1: maybe a message, a parent, children."""

    __slots__ = ("children", "item", "parent")

    def __init__(self, item: SortItem | None = None) -> None:
        self.item = item
        self.parent: _Box | None = None
        self.children: list[_Box] = []

    def above(self, other: _Box) -> bool:
        """Whether this box is `other` or one of its ancestors (linking `other` -> self would loop)."""
        node: _Box | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False


def _link(parent: _Box, child: _Box) -> None:
    child.parent = parent
    parent.children.append(child)


def _unlink(child: _Box) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
        child.parent = None


def _ids(value: bytes | None) -> list[bytes]:
    if not value:
        return []
    return [m.group(1).strip() for m in _MSGID.finditer(value) if m.group(1).strip()]


def _subject(box: _Box) -> tuple[str, bool]:
    item = box.item if box.item is not None else (box.children[0].item if box.children else None)
    if item is None:
        return "", False
    subject, is_reply = base_subject(decoded_subject(item.message))
    return casemap(subject), is_reply


def _references(items: Sequence[SortItem]) -> list[ThreadNode]:
    table: dict[bytes, _Box] = {}
    boxes: list[_Box] = []
    for it in sorted(items, key=lambda it: it.seq):
        header = it.message.header
        own = _ids(header.value("message-id"))
        mid = own[0] if own else None
        if mid is None or (mid in table and table[mid].item is not None):
            box = _Box(it)  # (1) missing or duplicate Message-ID: a unique one
            boxes.append(box)
        else:
            box = table.get(mid) or _Box()
            if mid not in table:
                table[mid] = box
                boxes.append(box)
            box.item = it
        refs = _ids(header.value("references")) or _ids(header.value("in-reply-to"))[:1]
        prev: _Box | None = None
        for ref in refs:  # (1A) link the references in order, never changing a link or making a loop
            ref_box = table.get(ref)
            if ref_box is None:
                ref_box = table[ref] = _Box()
                boxes.append(ref_box)
            if prev is not None and ref_box.parent is None and not ref_box.above(prev):
                _link(prev, ref_box)
            prev = ref_box
        if prev is not None:  # (1B) the last reference is the parent; replace a parent guessed before
            if box.parent is not None:
                _unlink(box)
            if not box.above(prev):
                _link(prev, box)
    roots = [b for b in boxes if b.parent is None]  # (2)
    roots = _prune(roots)  # (4)
    roots = _gather_subjects(roots)  # (5)
    _sort_siblings(roots)  # (6)
    return [_node(b) for b in roots]


def _post_order(roots: list[_Box]) -> list[_Box]:
    """Every box below `roots` (roots included), children before their parents."""
    order: list[_Box] = []
    stack = list(roots)
    while stack:
        box = stack.pop()
        order.append(box)
        stack.extend(box.children)
    order.reverse()
    return order


def _prune_children(box: _Box) -> list[_Box]:
    """(4) below the root: drop dummies without children, replace the others by their children."""
    out: list[_Box] = []
    for child in box.children:
        if child.item is None:
            for grandchild in child.children:
                grandchild.parent = box
            out.extend(child.children)
        else:
            out.append(child)
    return out


def _prune(roots: list[_Box]) -> list[_Box]:
    """(4) Prune dummies; at the root a dummy stays when it has more than one child."""
    for box in _post_order(roots):
        box.children = _prune_children(box)
    out: list[_Box] = []
    for box in roots:
        if box.item is None and len(box.children) <= 1:
            for child in box.children:
                child.parent = None
            out.extend(box.children)
        else:
            out.append(box)
    return out


def _gather_subjects(roots: list[_Box]) -> list[_Box]:
    """(5) Put root-level threads with the same base subject together."""
    table: dict[str, _Box] = {}
    for box in roots:  # (5B)
        subject, is_reply = _subject(box)
        if not subject:
            continue
        old = table.get(subject)
        if (
            old is None
            or (box.item is None and old.item is not None)
            or (old.item is not None and box.item is not None and _subject(old)[1] and not is_reply)
        ):
            table[subject] = box
    out: list[_Box] = []
    replaced: dict[int, _Box] = {}
    for box in roots:  # (5C)
        if box.parent is not None:  # already put under another thread
            if id(box) in replaced:
                out.append(replaced[id(box)])
            continue
        subject, is_reply = _subject(box)
        other = table.get(subject) if subject else None
        if other is None or other is box:
            out.append(box)
            continue
        if other.item is None and box.item is None:
            for child in box.children:
                _link(other, child)
            box.children = []
        elif other.item is None or (not _subject(other)[1] and is_reply):
            _link(other, box)
        else:
            dummy = _Box()
            if other in out:
                out[out.index(other)] = dummy
            else:
                replaced[id(other)] = dummy
            _link(dummy, other)
            _link(dummy, box)
            table[subject] = dummy
    return out


def _date(box: _Box) -> tuple[float, int]:
    item = box.item if box.item is not None else (box.children[0].item if box.children else None)
    return (0.0, 0) if item is None else (item.sent, item.seq)


def _sort_siblings(roots: list[_Box]) -> None:
    """(6) Sort each set of siblings by sent date (a dummy by its first child's), ties in mailbox order."""
    for box in _post_order(roots):
        box.children.sort(key=_date)
    roots.sort(key=_date)


def _node(root: _Box) -> ThreadNode:
    nodes: dict[int, ThreadNode] = {}
    for box in _post_order([root]):
        nodes[id(box)] = ThreadNode(
            None if box.item is None else box.item.id, [nodes[id(c)] for c in box.children]
        )
    return nodes[id(root)]
