"""Matching server replies against imaptest expectations: `$variables` bound from server input, `$n` as
"message n at the start of the command" across EXPUNGEs, `$!unordered`/`$!noextra`/`$!ignore=`/`$!ban=`
directives and the defaults scripted_test.md gives FETCH, FLAGS, LIST, LSUB and STATUS lists, prefix matching
of OK/NO/BAD/BYE texts, and imaptest's C-string comparison (nothing after a NUL byte). Keeps nothing on disk.
"""

from __future__ import annotations

import re

from tests.imaptest.script import Arg, ScriptFailure, Tok

IS_VAR = re.compile(r"[A-Za-z0-9_]")


class Matcher:
    def __init__(self, variables: dict[str, str]) -> None:
        self.vars = variables
        self.added: list[str] = []
        self.seqmap: list[int] = []
        self.modseq_idx = 0
        self.modseq_value = 0

    def relative_seq(self, seq: int) -> str:
        if seq == 0:
            return "<zero seq>"
        if seq > len(self.seqmap):
            return "<out of range>"
        if self.seqmap[seq - 1] == 0:
            return "<expunged>"
        return str(self.seqmap[seq - 1])

    def handle_expunge(self, seq: int) -> None:
        if seq > len(self.seqmap):
            return
        for i in range(seq - 1, len(self.seqmap)):
            if self.seqmap[i] >= seq:
                self.seqmap[i] = 0 if self.seqmap[i] == seq else self.seqmap[i] - 1

    def expand_command(self, text: str) -> str:
        out = []
        i = 0
        while i < len(text):
            c = text[i]
            if c != "$" or i + 1 == len(text):
                out.append(c)
                i += 1
                continue
            i += 1
            if text[i] == "$":
                out.append("$")
                i += 1
                continue
            if text[i] == "{":
                end = text.index("}", i)
                name = text[i + 1 : end]
                i = end + 1
            else:
                j = i
                while j < len(text) and IS_VAR.match(text[j]):
                    j += 1
                name = text[i:j]
                i = j
            if name.isdigit():
                out.append(self.relative_seq(int(name)))
            elif name in self.vars:
                out.append(self.vars[name])
            else:
                raise ScriptFailure(f"Uninitialized variable: {name}")
        return "".join(out)

    def _modseq(self, idx: int, value: str) -> str:
        if not value.isdigit():
            return "$modseq-not-number"
        number = int(value)
        at_least = self.modseq_value + (idx - self.modseq_idx)
        result = value
        if number < at_least:
            result = f"$modseq-at-least-{at_least}"
            number = at_least
        self.modseq_idx, self.modseq_value = idx, number
        return result

    def expand_input(self, pattern: str, inp: str) -> tuple[str | None, bool]:
        icase = True
        out = []
        p = 0
        q = 0
        while p < len(pattern):
            if pattern[p] != "$" or pattern[p + 1 : p + 2] == "$":
                if pattern[p] == "$":
                    p += 1
                if q >= len(inp) or pattern[p].upper() != inp[q].upper():
                    return None, icase
                out.append(pattern[p])
                p += 1
                q += 1
                continue
            p += 1
            if p < len(pattern) and pattern[p] == "{":
                end = pattern.find("}", p + 1)
                if end < 0:
                    return "", icase
                name = pattern[p + 1 : end]
                p = end + 1
            else:
                j = p
                while j < len(pattern) and IS_VAR.match(pattern[j]):
                    j += 1
                name = pattern[p:j]
                p = j
            if name.isdigit():
                value = self.relative_seq(int(name))
            elif name.startswith("case:"):
                icase = False
                value = name[5:]
            else:
                value_or_none = self.vars.get(name) if name else None
                if value_or_none is None:
                    rest = pattern[p:]
                    stop = rest[0] if rest else ""
                    if stop == "$" and rest[1:2] != "$":
                        stop = ""
                    elif stop == "$":
                        stop = "$"
                    end_q = q
                    if stop:
                        while end_q < len(inp) and inp[end_q].upper() != stop.upper():
                            end_q += 1
                    else:
                        end_q = len(inp)
                    value = inp[q:end_q]
                    m = re.fullmatch(r"modseq(\d+)", name)
                    if not name:
                        pass
                    elif m:
                        value = self._modseq(int(m.group(1)), value)
                        self.vars[name] = value
                    else:
                        self.vars[name] = value
                        self.added.append(name)
                else:
                    value = value_or_none
            out.append(value)
            for ch in value:
                if q >= len(inp) or inp[q] != ch:
                    return None, icase
                q += 1
        if q != len(inp):
            return "".join(out) + "\x00", icase  # input longer than the pattern: mismatch (or prefix)
        return "".join(out), icase

    def match_args(
        self, match: list[Arg], args: list[Arg], limit: int | None = None, prefix: bool = False
    ) -> bool:
        count = len(match) if limit is None else min(limit, len(match))
        for k in range(count):
            m = match[k]
            if k >= len(args):
                return False
            a = args[k]
            if isinstance(m, list):
                if not isinstance(a, list) or not self.match_list(m, a):
                    return False
                continue
            if m.kind == "nil":
                if not (isinstance(a, Tok) and a.kind == "nil"):
                    return False
                continue
            if m.text == "$" and isinstance(a, list):
                continue
            if isinstance(a, list) or a.kind == "nil":
                return False
            # imaptest compares C strings: text after a NUL byte is not compared
            expanded, icase = self.expand_input(m.text.split("\x00")[0], a.text.split("\x00")[0])
            last = k == len(match) - 1
            if prefix and last:
                if expanded is None:
                    if not self._prefix_ok(m.text, a.text):
                        return False
                    continue
                expanded = expanded.rstrip("\x00")
                if not (
                    a.text.upper().startswith(expanded.upper()) if icase else a.text.startswith(expanded)
                ):
                    return False
            else:
                if expanded is None or expanded.endswith("\x00"):
                    return False
                actual = a.text.split("\x00")[0]
                if (actual.upper() != expanded.upper()) if icase else (actual != expanded):
                    return False
        if limit is not None:
            return True
        return prefix or len(args) == len(match)

    def _prefix_ok(self, pattern: str, text: str) -> bool:
        return "$" not in pattern and text.upper().startswith(pattern.upper())

    def match_list(self, match: list[Arg], args: list[Arg]) -> bool:
        unordered = False
        chain = 1
        noextra: bool | None = None
        ignores: list[str] = []
        bans: list[str] = []
        k = 0
        while k < len(match) and isinstance(match[k], Tok) and match[k].text.startswith("$!"):  # type: ignore[union-attr]
            d = match[k].text[2:]  # type: ignore[union-attr]
            if d.startswith("unordered"):
                unordered = True
                if noextra is None:
                    noextra = False
                if d.startswith("unordered="):
                    chain = int(d[10:])
            elif d == "ordered":
                unordered = False
            elif d == "extra":
                noextra = False
            elif d == "noextra":
                noextra = True
            elif d.startswith("ignore="):
                ignores.append(d[7:].lower())
            elif d.startswith("ban="):
                bans.append(d[4:].lower())
            k += 1
        match = match[k:]
        if noextra is None:
            noextra = True
        if not unordered:
            return self.match_args(match, args)
        if len(args) % chain:
            return False
        matched = [False] * len(args)
        for m_start in range(0, len(match), chain):
            for a_start in range(0, len(args), chain):
                saved = dict(self.vars)
                if self.match_args(match[m_start : m_start + chain], args[a_start:], limit=chain):
                    matched[a_start] = True
                    break
                self.vars.clear()
                self.vars.update(saved)
            else:
                return False
        for a_start in range(0, len(args), chain):
            if matched[a_start]:
                continue
            a = args[a_start]
            if not isinstance(a, Tok) or a.kind == "nil":
                continue
            if noextra and a.text.lower() not in ignores:
                return False
            if not noextra and a.text.lower() in bans:
                return False
        return True


def add_default_directives(args: list[Arg]) -> list[Arg]:
    """The defaults of scripted_test.md for FETCH, FLAGS, LIST, LSUB and STATUS lists without directives."""
    name = ""
    if args and isinstance(args[0], Tok):
        first = args[0].text
        name = first
        if (first.startswith("$") or first[:1].isdigit()) and len(args) > 1 and isinstance(args[1], Tok):
            name = args[1].text
    name = name.lower()

    def has_directives(lst: list[Arg]) -> bool:
        return bool(lst) and isinstance(lst[0], Tok) and lst[0].text.startswith("$!")

    out = list(args)
    for idx, a in enumerate(out):
        if not isinstance(a, list) or has_directives(a):
            continue
        if name in ("list", "lsub") and idx == 1:
            out[idx] = [Tok("atom", "$!unordered"), *a]
        elif name == "status" and idx == 2:
            out[idx] = [Tok("atom", "$!unordered=2"), *a]
        elif name == "fetch" and idx == 2:
            inner = list(a)
            prev = ""
            for j, item in enumerate(inner):
                if isinstance(item, Tok):
                    prev = item.text.lower()
                elif prev == "flags" and not has_directives(item):
                    inner[j] = [
                        Tok("atom", "$!unordered"),
                        Tok("atom", "$!noextra"),
                        Tok("atom", "$!ignore=\\recent"),
                        Tok("atom", "$!ignore=$HasAttachment"),
                        Tok("atom", "$!ignore=$HasNoAttachment"),
                        *item,
                    ]
            out[idx] = [Tok("atom", "$!unordered=2"), *inner]
    return out
