"""MIME access for Sieve: body text by content type (RFC 5173 §5), the parts foreverypart walks (RFC 5703 §3),
header tests with :mime/:anychild/:type/:subtype/:contenttype/:param (RFC 5703 §4), text of a part for
extracttext.

Uses Python's `email` package; called by `kinmail.sieve.interp_ext`. Nothing kept on disk.
"""

from __future__ import annotations

import email.message
import html
import re
from typing import TYPE_CHECKING

from kinmail.sieve.message import SieveMessage, decode_header_value, part_text
from kinmail.sieve.syntax import Node

if TYPE_CHECKING:
    from kinmail.sieve.interp import Interpreter

Part = email.message.Message
_TAGS = re.compile(r"<[^>]*>")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def html_text(markup: str) -> str:
    markup = _SCRIPT.sub(" ", markup)
    return html.unescape(_TAGS.sub(" ", markup))


_CTYPE = re.compile(r"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)/([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:;|$)")
_KNOWN_CTE = frozenset({"", "7bit", "8bit", "binary", "quoted-printable", "base64"})


def real_content_type(part: Part, default: str = "text/plain") -> str:
    """The part's content type as written; "invalid/invalid" when the field does not parse (Python's email
    package would fall back to text/plain)."""
    raw = part.get("content-type")
    if raw is None:
        return default
    m = _CTYPE.match(str(raw))
    if m is None:
        return "invalid/invalid"
    return f"{m.group(1)}/{m.group(2)}".lower()


def _type_matches(ctype: str, wanted: str) -> bool:
    wanted = wanted.lower()
    if wanted == "":
        return True
    if wanted.count("/") > 1:
        return False
    if "/" in wanted:
        return ctype == wanted
    return ctype.split("/")[0] == wanted


def _leaf_text(part: Part) -> str | None:
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte not in _KNOWN_CTE:
        return None
    return part_text(part)


def _raw_header(part: Part) -> str:
    return "".join(f"{k}: {v}\r\n" for k, v in part.items())


def body_texts(message: SieveMessage, types: list[str], html_to_text: bool) -> list[str]:
    """RFC 5173 §5.2: the texts searched by `body :content types` (or `:text` when `html_to_text`): decoded
    leaf parts of a matching type; for multipart containers their prologue and epilogue; for message/rfc822
    parts the nested header as one string, then the nested parts by their own types."""
    if not message.has_body:
        return []
    out: list[str] = []
    text_mode = html_to_text

    def matches(ctype: str) -> bool:
        if text_mode:
            return ctype.startswith("text/") or ctype == "application/xhtml+xml"
        return any(_type_matches(ctype, t) for t in types)

    def walk(part: Part, default: str) -> None:
        ctype = real_content_type(part, default)
        payload = part.get_payload()
        if part.is_multipart() and ctype.startswith("multipart/"):
            if not text_mode and matches(ctype):
                out.append((part.preamble or "") + (part.epilogue or ""))
            sub_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            if isinstance(payload, list):
                for sub in payload:
                    if isinstance(sub, email.message.Message):
                        walk(sub, sub_default)
            return
        if ctype == "message/rfc822" and isinstance(payload, list):
            inner = payload[0] if payload else None
            if isinstance(inner, email.message.Message):
                if not text_mode and matches(ctype):
                    out.append(_raw_header(inner))
                walk(inner, "text/plain")
            return
        if matches(ctype):
            text = _leaf_text(part)
            if text is None:
                return
            if text_mode and ctype in ("text/html", "application/xhtml+xml"):
                text = html_text(text)
            out.append(text)

    walk(message.mime, "text/plain")
    return out


def children_recursive(part: Part) -> list[Part]:
    """The parts below `part`, depth first (foreverypart does not visit the part it starts from)."""
    out: list[Part] = []
    payload = part.get_payload()
    if (part.is_multipart() and isinstance(payload, list)) or (
        part.get_content_type().lower() == "message/rfc822" and isinstance(payload, list)
    ):
        for sub in payload:
            if isinstance(sub, email.message.Message):
                out.append(sub)
                out.extend(children_recursive(sub))
    return out


def part_text_if_text(part: object) -> str:
    if not isinstance(part, email.message.Message) or part.is_multipart():
        return ""
    if part.get_content_maintype().lower() != "text":
        return ""
    text = part_text(part)
    if part.get_content_type().lower() == "text/html":
        text = html_text(text).strip()
    return text


def _targets(it: Interpreter, node: Node) -> list[Part]:
    current = it.mime_part
    if current is None:
        top = it.message.mime
        if "anychild" in node.tags:
            return [top, *children_recursive(top)]
        return [top]
    assert isinstance(current, email.message.Message)
    if "anychild" in node.tags:
        return [current, *children_recursive(current)]
    return [current]


def _param_values(part: Part, header: str, names: list[str]) -> list[str]:
    out: list[str] = []
    params = part.get_params(header=header) or []
    for key, value in params[1:]:
        if any(key.lower() == n.lower() for n in names):
            out.append(email.utils.collapse_rfc2231_value(value) if isinstance(value, tuple) else str(value))
    return out


def header_values(it: Interpreter, node: Node, names: list[str]) -> list[str]:
    """Values for `header :mime` / `address :mime`: the fields of the current part (or of any child)."""
    out: list[str] = []
    for part in _targets(it, node):
        for name in names:
            lname = name.lower()
            raw = part.get_all(name) or []
            if (
                lname == "content-type"
                and not raw
                and ("type" in node.tags or "subtype" in node.tags or "contenttype" in node.tags)
            ):
                raw = [part.get_content_type()]
            for value in raw:
                value = decode_header_value(str(value))
                if "type" in node.tags or "subtype" in node.tags or "contenttype" in node.tags:
                    if lname not in ("content-type", "content-disposition"):
                        continue
                    ctype = value.split(";")[0].strip().lower()
                    if "type" in node.tags:
                        out.append(ctype.split("/")[0])
                    elif "subtype" in node.tags:
                        out.append(ctype.partition("/")[2])
                    else:
                        out.append(ctype)
                elif "param" in node.tags:
                    arg = node.tags["param"]
                    assert arg is not None
                    out.extend(_param_values(part, lname, it.strs(arg)))
                else:
                    out.append(value)
    idx = it.tag_num(node, "index")
    if idx is not None:
        from kinmail.sieve.interp import _pick_index

        out = _pick_index(out, idx, "last" in node.tags)
    return out


def exists(it: Interpreter, node: Node) -> bool:
    names = it.strs(node.pos[0])
    parts = _targets(it, node)
    return all(any(part.get_all(n) for part in parts) for n in names)
