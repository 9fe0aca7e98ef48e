"""IMAP SEARCH and UID SEARCH with every key of RFC 9051 §6.4.4, CHARSET UTF-8, ESEARCH (RFC 4731), SEARCHRES
(RFC 5182), MODSEQ (RFC 7162); SORT (RFC 5256, RFC 5957) and THREAD (RFC 5256) when the message package
offers them.

Flag, size, date, UID and sequence keys are answered from the session's view; BODY and TEXT first ask the
store's full-text index (SQLite FTS5), header keys read the message headers through the message package.
The matching runs in a worker thread. Keeps nothing on disk.
"""

from __future__ import annotations

import importlib.util
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from kinmail.imapserver.cmd_message import selected
from kinmail.imapserver.selected import SelectedMailbox, compress_uids
from kinmail.imapserver.session import SELECTED, Session, blocking, command
from kinmail.message import search as msearch
from kinmail.message.mime import Message
from kinmail.proto.imap_args import SearchKey, as_astring, as_atom, day_start, parse_search
from kinmail.proto.imap_parser import Atom, Command, ParseError, Token
from kinmail.proto.imap_response import Code, ImapError, Status
from kinmail.store.errors import MessageGone
from kinmail.store.textindex import extract_text, query_form

if TYPE_CHECKING:
    from kinmail.store.types import MessageInfo

CONTENT_KEYS = {"BCC", "CC", "FROM", "SUBJECT", "TO", "HEADER", "SENTBEFORE", "SENTON", "SENTSINCE"}
TEXT_KEYS = {"BODY", "TEXT"}
FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}


@dataclass
class SearchContext:
    sel: SelectedMailbox
    saved: list[int]
    fts: dict[int, set[int]] = field(default_factory=dict)  # id(key) -> UIDs from the full-text index
    now: float = field(default_factory=time.time)
    highest_modseq_seen: int = 0
    exact_check: bool = True


def _walk(key: SearchKey) -> list[SearchKey]:
    out = [key]
    for child in key.children:
        out.extend(_walk(child))
    return out


def _match(key: SearchKey, info: MessageInfo, seq: int, ctx: SearchContext, content: dict[str, Any]) -> bool:
    name = key.name
    if name == "AND":
        return all(_match(k, info, seq, ctx, content) for k in key.children)
    if name == "OR":
        return any(_match(k, info, seq, ctx, content) for k in key.children)
    if name == "NOT":
        return not _match(key.children[0], info, seq, ctx, content)
    if name == "ALL":
        return True
    if name in FLAG_KEYS:
        flag, present = FLAG_KEYS[name]
        return (flag in info.flags) == present
    if name == "RECENT":
        return info.uid in ctx.sel.recent
    if name == "NEW":
        return info.uid in ctx.sel.recent and "\\Seen" not in info.flags
    if name == "OLD":
        return info.uid not in ctx.sel.recent
    if name == "KEYWORD":
        return str(key.args[0]).lower() in {f.lower() for f in info.flags}
    if name == "UNKEYWORD":
        return str(key.args[0]).lower() not in {f.lower() for f in info.flags}
    if name == "LARGER":
        return bool(info.size > int(key.args[0]))  # type: ignore[call-overload]
    if name == "SMALLER":
        return bool(info.size < int(key.args[0]))  # type: ignore[call-overload]
    if name in ("BEFORE", "ON", "SINCE"):
        start = day_start(key.args[0])  # type: ignore[arg-type]
        # INTERNALDATE compared by date in UTC (RFC 9051 §6.4.4 leaves the zone to the server)
        if name == "BEFORE":
            return info.internaldate < start
        if name == "ON":
            return start <= info.internaldate < start + 86400
        return info.internaldate >= start
    if name == "OLDER":
        return bool(info.internaldate <= ctx.now - int(key.args[0]))  # type: ignore[call-overload]
    if name == "YOUNGER":
        return bool(info.internaldate >= ctx.now - int(key.args[0]))  # type: ignore[call-overload]
    if name == "UID":
        seqset = key.args[0]
        if getattr(seqset, "saved", False):
            return info.uid in ctx.saved
        largest = ctx.sel.uids[-1] if ctx.sel.uids else 0
        return seqset.contains(info.uid, largest)  # type: ignore[attr-defined, no-any-return]
    if name == "SEQ":
        seqset = key.args[0]
        if getattr(seqset, "saved", False):
            return info.uid in ctx.saved
        return seqset.contains(seq, len(ctx.sel.uids))  # type: ignore[attr-defined, no-any-return]
    if name == "MODSEQ":
        ctx.highest_modseq_seen = max(ctx.highest_modseq_seen, info.modseq)
        return bool(info.modseq >= int(key.args[0]))  # type: ignore[call-overload]
    if name in TEXT_KEYS:
        if info.uid not in ctx.fts.get(id(key), ()):
            return False
        if not ctx.exact_check:
            return True
        raw = content.get("raw")
        if raw is None:
            return False
        text = content.get("text")
        if text is None:  # the very text the full-text index holds (HTML as text), so both agree
            text = content["text"] = tuple(msearch.fold(part) for part in extract_text(raw))
        want = msearch.fold(query_form(str(key.args[0])))
        return want in text[1] or (name == "TEXT" and want in text[0])
    message = content.get("message")
    if message is None:
        return False
    if name in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
        return msearch.header_contains(message, name, str(key.args[0]))
    if name == "HEADER":
        return msearch.header_contains(message, str(key.args[0]), str(key.args[1]))
    if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
        sent = msearch.message_sent_date(message)
        if sent is None:  # no usable Date: field: INTERNALDATE stands in (as RFC 5256 §3 does for SORT)
            sent = datetime.fromtimestamp(info.internaldate, UTC).date()
        wanted: date = key.args[0]  # type: ignore[assignment]
        if name == "SENTBEFORE":
            return sent < wanted
        if name == "SENTON":
            return sent == wanted
        return sent >= wanted
    return False


def _required(key: SearchKey, ctx: SearchContext) -> set[int] | None:
    """The UIDs outside which no message can match: the full-text hits of the BODY and TEXT keys that the
    whole key needs (itself, or in a conjunction); None when there are none."""
    if key.name in TEXT_KEYS:
        return ctx.fts[id(key)]
    if key.name == "AND":
        found = [hits for hits in (_required(k, ctx) for k in key.children) if hits is not None]
        if found:
            return set.intersection(*found)
    return None


def run_search(ctx: SearchContext, key: SearchKey) -> list[int]:
    """The UIDs matching `key`, in UID order (runs in a worker thread)."""
    sel = ctx.sel
    keys = _walk(key)
    for k in keys:
        if k.name in TEXT_KEYS:
            query = str(k.args[0])
            ctx.fts[id(k)] = (
                sel.mailbox.search_text(query, "body" if k.name == "BODY" else "text")
                if query
                else set(sel.uids)
            )
    needs_content = any(k.name in CONTENT_KEYS for k in keys)
    text_candidates: set[int] = set().union(*ctx.fts.values()) if ctx.fts else set()
    # The index matches substrings of the decoded text already (FTS5 trigram), of the same text the check
    # would read: reading and parsing each candidate again only pays for a needle beyond ASCII, where the
    # index's case folding is not Python's.
    ctx.exact_check = not all(str(k.args[0]).isascii() for k in keys if k.name in TEXT_KEYS)
    if not ctx.exact_check:
        text_candidates = set()
    required = _required(key, ctx)
    if required is not None and key.name in TEXT_KEYS and not ctx.exact_check:
        # the index's answer is the answer, in the view's order (without a Python loop per message)
        return list(itertools.compress(sel.uids, map(required.__contains__, sel.uids)))
    infos: list[MessageInfo] = list(sel.msgs.values())
    seqs: list[int] | range = range(1, len(infos) + 1)
    if required is not None and len(required) * 8 < len(infos):  # few candidates: only they are looked at
        infos, seqs = sel.msgs.many(sorted(required))
    out: list[int] = []
    for info, seq in zip(infos, seqs, strict=True):
        uid = info.uid
        if required is not None and uid not in required:
            continue
        content: dict[str, Any] = {}
        if needs_content or uid in text_candidates:
            try:
                content["raw"] = sel.mailbox.read(uid)
            except (MessageGone, FileNotFoundError):
                continue
            if needs_content:
                content["message"] = Message(content["raw"])
        if _match(key, info, seq, ctx, content):
            out.append(uid)
    return out


def _parse_charset(tokens: list[Token]) -> tuple[str, list[Token]]:
    if len(tokens) >= 2 and isinstance(tokens[0], Atom) and tokens[0].upper == "CHARSET":
        charset = as_astring(tokens[1]).upper()
        if charset not in ("UTF-8", "US-ASCII", "UTF8"):
            raise ImapError(Status.NO, "Unsupported charset", f"{Code.BADCHARSET} (UTF-8 US-ASCII)")
        return "utf-8", tokens[2:]
    return "utf-8", tokens


def _parse_return(tokens: list[Token]) -> tuple[set[str] | None, list[Token]]:
    if tokens and isinstance(tokens[0], Atom) and tokens[0].upper == "RETURN":
        if len(tokens) < 2 or not isinstance(tokens[1], list):
            raise ParseError("RETURN needs a list")
        opts = {as_atom(t).upper() for t in tokens[1]}
        if not opts <= {"MIN", "MAX", "ALL", "COUNT", "SAVE"}:
            raise ParseError("Unknown RETURN option")
        return opts, tokens[2:]
    return None, tokens


@command("SEARCH", SELECTED)
@command("UID SEARCH", SELECTED)
async def cmd_search(s: Session, cmd: Command) -> None:
    sel = selected(s)
    uid_cmd = cmd.name.startswith("UID")
    returns, rest = _parse_return(list(cmd.args))
    charset, rest = _parse_charset(rest)
    key = parse_search(rest, charset)
    await s.sync(expunges=False)
    ctx = SearchContext(sel, list(s.saved_search))
    uids = await blocking(run_search, ctx, key)
    uses_modseq = any(k.name == "MODSEQ" for k in _walk(key))
    if uses_modseq:
        s.enable_condstore()
    numbers = uids if uid_cmd else sel.msgs.seqs(uids)
    if returns is None and "IMAP4REV2" in s.enabled:
        returns = {"ALL"}  # RFC 9051 §6.4.4: IMAP4rev2 answers with ESEARCH
    if returns is None:
        line = " ".join(["SEARCH", *map(str, numbers)])
        if uses_modseq and uids:
            line += f" (MODSEQ {max(sel.msgs[u].modseq for u in uids)})"
        s.untagged(line)
    else:
        if "SAVE" in returns:
            s.saved_search = list(uids)
            returns = returns - {"SAVE"}
            if not returns:
                await s.sync(expunges=uid_cmd)
                s.ok(cmd)
                return
        if not returns:
            returns = {"ALL"}
        parts = [f'(TAG "{cmd.tag}")']
        if uid_cmd:
            parts.append("UID")
        if numbers:
            if "MIN" in returns:
                parts.append(f"MIN {min(numbers)}")
            if "MAX" in returns:
                parts.append(f"MAX {max(numbers)}")
            if "ALL" in returns:
                parts.append(f"ALL {compress_uids(numbers)}")
        if "COUNT" in returns:
            parts.append(f"COUNT {len(numbers)}")
        if uses_modseq and uids:
            # RFC 7162 §3.1.5 with RFC 4731: with only MIN/MAX, the MODSEQ of the messages returned
            shown = uids
            if returns <= {"MIN", "MAX"}:
                shown = [
                    u
                    for u, n in zip(uids, numbers, strict=True)
                    if (n == min(numbers) and "MIN" in returns) or (n == max(numbers) and "MAX" in returns)
                ]
            parts.append(f"MODSEQ {max(sel.msgs[u].modseq for u in shown)}")
        s.untagged("ESEARCH " + " ".join(parts))
    await s.sync(expunges=uid_cmd)
    s.ok(cmd)


# --- SORT and THREAD (when the message package has them) ---------------------------------------------------


def sort_available() -> bool:
    return importlib.util.find_spec("kinmail.message.sort") is not None


def thread_available() -> bool:
    return importlib.util.find_spec("kinmail.message.thread") is not None


def _read_messages(sel: SelectedMailbox, uids: list[int]) -> list[tuple[MessageInfo, Any]]:
    from kinmail.message.mime import Message

    out = []
    for uid in uids:
        try:
            out.append((sel.msgs[uid], Message(sel.mailbox.read(uid))))
        except (MessageGone, FileNotFoundError, KeyError):
            continue
    return out


@command("SORT", SELECTED)
@command("UID SORT", SELECTED)
async def cmd_sort(s: Session, cmd: Command) -> None:
    from kinmail.message import sort as msort

    sel = selected(s)
    uid_cmd = cmd.name.startswith("UID")
    args = list(cmd.args)
    returns, args = _parse_return(args)
    if len(args) < 3 or not isinstance(args[0], list):
        raise ParseError("SORT takes criteria, a charset and search keys")
    criteria = [as_atom(t).upper() for t in args[0]]
    try:
        parsed = msort.parse_criteria(criteria)
    except ValueError as exc:
        raise ParseError(str(exc)) from exc
    del parsed
    charset = as_astring(args[1]).upper()
    if charset not in ("UTF-8", "US-ASCII"):
        raise ImapError(Status.NO, "Unsupported charset", f"{Code.BADCHARSET} (UTF-8 US-ASCII)")
    key = parse_search(args[2:])
    await s.sync(expunges=False)
    ctx = SearchContext(sel, list(s.saved_search))

    def work() -> list[int]:
        uids = run_search(ctx, key)
        items = [
            msort.SortItem(
                info.uid if uid_cmd else sel.seq_of(info.uid),
                sel.seq_of(info.uid),
                info.size,
                info.internaldate,
                msg,
            )
            for info, msg in _read_messages(sel, uids)
        ]
        return msort.sort_ids(items, criteria)

    numbers = await blocking(work)  # UIDs or sequence numbers already, in the sorted order
    if returns is not None:
        parts = [f'(TAG "{cmd.tag}")'] + (["UID"] if uid_cmd else [])
        if numbers and "ALL" in (returns or {"ALL"}):
            parts.append(f"ALL {','.join(str(n) for n in numbers)}")
        if "COUNT" in returns:
            parts.append(f"COUNT {len(numbers)}")
        s.untagged("ESEARCH " + " ".join(parts))
    else:
        s.untagged("SORT" + "".join(f" {n}" for n in numbers))
    await s.sync(expunges=uid_cmd)
    s.ok(cmd)


@command("THREAD", SELECTED)
@command("UID THREAD", SELECTED)
async def cmd_thread(s: Session, cmd: Command) -> None:
    from kinmail.message import thread as mthread
    from kinmail.message.sort import SortItem

    sel = selected(s)
    uid_cmd = cmd.name.startswith("UID")
    if len(cmd.args) < 3:
        raise ParseError("THREAD takes an algorithm, a charset and search keys")
    algorithm = as_atom(cmd.args[0]).upper()
    if algorithm not in ("REFERENCES", "ORDEREDSUBJECT"):
        raise ImapError(Status.NO, "Unknown threading algorithm")
    charset = as_astring(cmd.args[1]).upper()
    if charset not in ("UTF-8", "US-ASCII"):
        raise ImapError(Status.NO, "Unsupported charset", f"{Code.BADCHARSET} (UTF-8 US-ASCII)")
    key = parse_search(list(cmd.args[2:]))
    await s.sync(expunges=False)
    ctx = SearchContext(sel, list(s.saved_search))

    def work() -> bytes:
        uids = run_search(ctx, key)
        items = [
            SortItem(
                info.uid if uid_cmd else sel.seq_of(info.uid),
                sel.seq_of(info.uid),
                info.size,
                info.internaldate,
                msg,
            )
            for info, msg in _read_messages(sel, uids)
        ]
        return mthread.render_threads(mthread.thread_ids(items, algorithm))

    text = await blocking(work)
    s.untagged(b"THREAD" + (b" " + text if text else b""))
    await s.sync(expunges=uid_cmd)
    s.ok(cmd)
