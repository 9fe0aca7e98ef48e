"""editheader (RFC 5293): addheader and deleteheader on the message under filtering.

Protected fields (Received, Auto-Submitted; RFC 5293 §7) are left alone; values are RFC 2047-encoded when
not ASCII and folded. Called by `kinmail.sieve.interp_ext`; nothing kept on disk.
"""

from __future__ import annotations

import email.header
import re
from typing import TYPE_CHECKING

from kinmail.sieve.errors import SieveRuntimeError
from kinmail.sieve.message import decode_header_value
from kinmail.sieve.syntax import Node

if TYPE_CHECKING:
    from kinmail.sieve.interp import Interpreter

PROTECTED = frozenset({"received", "auto-submitted"})
MAX_VALUE = 2048
_NAME = re.compile(r"^[!-9;-~]+$")


def protected(name: str) -> bool:
    return name.lower() in PROTECTED


def encode_value(value: str) -> str:
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = re.sub(r"\n(?![ \t])", "\n ", value).replace("\n", "\r\n")
    if value.isascii():
        return value
    return email.header.Header(value, "utf-8").encode().replace("\n", "\r\n")


def add(it: Interpreter, node: Node, name: str, value: str) -> None:
    if not _NAME.match(name):
        raise SieveRuntimeError(f"addheader: specified field name '{name}' is invalid", node.line)
    limit = it.host.editheader_max_size
    if len(value.encode("utf-8")) > limit:
        raise SieveRuntimeError(
            f"addheader: specified header value is too large (more than {limit} bytes)", node.line
        )
    if not it.host.editheader_allowed(name, "add"):
        return
    it.message.add_header(name, encode_value(value), last="last" in node.tags)


def delete(it: Interpreter, node: Node) -> None:
    name = it.str1(node.pos[0])
    if not _NAME.match(name):
        raise SieveRuntimeError(f"deleteheader: specified field name '{name}' is invalid", node.line)
    if not it.host.editheader_allowed(name, "delete"):
        return
    lname = name.lower()
    idx = it.tag_num(node, "index")
    last = "last" in node.tags
    positions = [i for i, (n, _) in enumerate(it.message.headers) if n.lower() == lname]
    if idx is not None:
        if idx > len(positions):
            return
        positions = [positions[-idx] if last else positions[idx - 1]]
    if len(node.pos) == 2:
        chosen = []
        for i in positions:
            value = decode_header_value(it.message.headers[i][1])
            if it.match(node, [value], node.pos[1]):
                chosen.append(i)
        positions = chosen
    if not positions:
        return
    drop = set(positions)
    it.message.replace_headers([h for i, h in enumerate(it.message.headers) if i not in drop])
