"""Sieve lexer and parser (RFC 5228 §8): script text → a tree of commands, tests and arguments.

Called by `kinmail.sieve.compile_script` only; it knows no command names (that is the validator's job). Errors
are collected with their line and column and the parser recovers at the next `;` or block, so that one run
reports every problem. Keeps nothing on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kinmail.sieve.strings import Template

MAX_NUMBER = 2**64 - 1
MAX_IDENTIFIER = 32
MAX_ARGUMENTS = 32
MAX_BLOCK_NESTING = 32
MAX_TEST_NESTING = 32

TokenKind = Literal["id", "tag", "num", "str", "special", "eof"]


@dataclass(slots=True)
class Token:
    kind: TokenKind
    value: str | int
    line: int
    col: int


ArgKind = Literal["tag", "number", "string", "strlist"]


@dataclass(slots=True)
class Argument:
    """One argument as written: a `:tag`, a number, a string, or a string list `[..]`."""

    kind: ArgKind
    value: str | int | list[str]
    line: int
    col: int
    # filled by validation: the strings after encoded-character decoding, with variable references compiled
    tmpl: list[str | Template] | None = None

    @property
    def strings(self) -> list[str]:
        if isinstance(self.value, list):
            return self.value
        return [str(self.value)]


@dataclass(slots=True, eq=False)
class Node:
    """A command (with an optional block) or a test; validation fills `tags`, `pos` and `data`."""

    name: str
    args: list[Argument]
    tests: list[Node]
    block: list[Node] | None
    line: int
    col: int
    is_test: bool
    has_test_list: bool = False
    tags: dict[str, Argument | None] = field(default_factory=dict)
    pos: list[Argument] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)


class Lexer:
    """Turns script text into tokens; problems go to `errors` as `(line, col, message)`."""

    def __init__(self, text: str, errors: list[tuple[int, int, str]]) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.col = 1
        self.errors = errors

    def _advance(self, n: int) -> None:
        for _ in range(n):
            if self.i < len(self.text) and self.text[self.i] == "\n":
                self.line += 1
                self.col = 1
            else:
                self.col += 1
            self.i += 1

    def _error(self, message: str, line: int | None = None, col: int | None = None) -> None:
        self.errors.append((line or self.line, col or self.col, message))

    def tokens(self) -> list[Token]:
        out: list[Token] = []
        text = self.text
        n = len(text)
        while True:
            # white space and comments
            while self.i < n:
                c = text[self.i]
                if c in " \t\r\n":
                    self._advance(1)
                elif c == "#":
                    end = text.find("\n", self.i)
                    self._advance((n if end < 0 else end) - self.i)
                elif text.startswith("/*", self.i):
                    end = text.find("*/", self.i + 2)
                    if end < 0:
                        self._error("end of file before end of bracket comment ('*/')")
                        self._advance(n - self.i)
                    else:
                        self._advance(end + 2 - self.i)
                else:
                    break
            if self.i >= n:
                out.append(Token("eof", "", self.line, self.col))
                return out
            line, col = self.line, self.col
            c = text[self.i]
            if c in ";,()[]{}":
                self._advance(1)
                out.append(Token("special", c, line, col))
            elif c == '"':
                out.append(Token("str", self._quoted(), line, col))
            elif c.isascii() and c.isdigit():
                j = self.i
                while j < n and text[j].isascii() and text[j].isdigit():
                    j += 1
                value = int(text[self.i : j])
                if j < n and text[j] in "kKmMgG":
                    value *= {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[text[j].lower()]
                    j += 1
                self._advance(j - self.i)
                if value > MAX_NUMBER:
                    self._error(f"number exceeds integer limit (maximum is {MAX_NUMBER})", line, col)
                    value = MAX_NUMBER
                out.append(Token("num", value, line, col))
            elif c == ":" or c == "_" or (c.isascii() and c.isalpha()):
                tag = c == ":"
                j = self.i + 1 if tag else self.i
                start = j
                while j < n and (text[j] == "_" or (text[j].isascii() and text[j].isalnum())):
                    j += 1
                word = text[start:j]
                if tag and (not word or word[0].isdigit()):
                    self._advance(j - self.i)
                    self._error("tag ':' is missing its identifier", line, col)
                    continue
                if not tag and word == "text" and j < n and text[j] == ":":
                    self._advance(j + 1 - self.i)
                    out.append(Token("str", self._multiline(line, col), line, col))
                    continue
                self._advance(j - self.i)
                if len(word) > MAX_IDENTIFIER:
                    kind = "tag" if tag else "identifier"
                    self._error(f"encountered impossibly long {kind} '{word[:MAX_IDENTIFIER]}...'", line, col)
                out.append(Token("tag" if tag else "id", word.lower(), line, col))
            else:
                j = self.i
                while j < n and text[j] not in ' \t\r\n;,()[]{}"#':
                    j += 1
                bad = text[self.i : max(j, self.i + 1)]
                self._advance(max(j - self.i, 1))
                self._error(f"unexpected character(s) starting with '{bad[:1]}'", line, col)
                out.append(Token("special", "?", line, col))

    def _quoted(self) -> str:
        text = self.text
        line, col = self.line, self.col
        self._advance(1)
        parts: list[str] = []
        start = self.i
        j = start
        n = len(text)
        while True:
            if j >= n:
                self._advance(j - self.i)
                self._error("end of file before end of quoted string", line, col)
                parts.append(text[start:j])
                break
            c = text[j]
            if c == '"':
                parts.append(text[start:j])
                self._advance(j + 1 - self.i)
                break
            if c == "\\" and j + 1 < n:
                parts.append(text[start:j])
                parts.append(text[j + 1])
                j += 2
                start = j
                continue
            j += 1
        value = "".join(parts)
        # RFC 5228 §2.4.2: line breaks in strings are CRLF
        return _crlf(value)

    def _multiline(self, line: int, col: int) -> str:
        text = self.text
        n = len(text)
        # rest of the "text:" line: white space and an optional hash comment
        j = self.i
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == "#":
            while j < n and text[j] != "\n":
                j += 1
        if j < n and text[j] == "\r":
            j += 1
        if j >= n or text[j] != "\n":
            self._advance(j - self.i)
            self._error("invalid character after 'text:' (expected a line break)")
        else:
            j += 1
        self._advance(j - self.i)
        lines: list[str] = []
        while True:
            if self.i >= n:
                self._error("end of file before end of multi-line string", line, col)
                break
            end = text.find("\n", self.i)
            raw = text[self.i : n if end < 0 else end]
            self._advance((n if end < 0 else end + 1) - self.i)
            content = raw[:-1] if raw.endswith("\r") else raw
            if content == ".":
                break
            if content.startswith("."):
                content = content[1:] if content.startswith("..") else content
            lines.append(content + "\r\n")
        return "".join(lines)


def _crlf(value: str) -> str:
    if "\n" not in value:
        return value
    return value.replace("\r\n", "\n").replace("\n", "\r\n")


class _Recover(Exception):
    pass


class Parser:
    """Builds `Node`s from tokens (RFC 5228 §8.2) and recovers after errors."""

    def __init__(self, tokens: list[Token], errors: list[tuple[int, int, str]]) -> None:
        self.toks = tokens
        self.k = 0
        self.errors = errors

    @property
    def tok(self) -> Token:
        return self.toks[self.k]

    def _error(self, tok: Token, message: str) -> None:
        self.errors.append((tok.line, tok.col, message))

    def _is(self, value: str) -> bool:
        return self.tok.kind == "special" and self.tok.value == value

    def _at_identifier(self) -> bool:
        return self.tok.kind == "id"

    def parse(self) -> list[Node]:
        nodes = self._commands(0)
        if self.tok.kind != "eof":
            self._error(self.tok, "unexpected '}' at top level")
        return nodes

    def _describe(self, tok: Token) -> str:
        if tok.kind == "eof":
            return "end of script"
        if tok.kind == "str":
            return "string"
        if tok.kind == "num":
            return "number"
        if tok.kind == "tag":
            return f"tag ':{tok.value}'"
        if tok.kind == "id":
            return f"identifier '{tok.value}'"
        return f"'{tok.value}'"

    def _skip_to_end(self) -> None:
        """Skip the rest of a broken command: up to and including `;`, or over a whole `{...}` block."""
        depth = 0
        while self.tok.kind != "eof":
            t = self.tok
            if t.kind == "special":
                if t.value == "{":
                    depth += 1
                elif t.value == "}":
                    if depth == 0:
                        return
                    depth -= 1
                    if depth == 0:
                        self.k += 1
                        return
                elif t.value == ";" and depth == 0:
                    self.k += 1
                    return
            self.k += 1

    def _commands(self, depth: int) -> list[Node]:
        nodes: list[Node] = []
        while self.tok.kind != "eof" and not self._is("}"):
            tok = self.tok
            if tok.kind != "id":
                self._error(tok, f"expected identifier (command), but found {self._describe(tok)}")
                self._skip_to_end()
                continue
            try:
                nodes.append(self._command(depth))
            except _Recover:
                self._skip_to_end()
        return nodes

    def _command(self, depth: int) -> Node:
        tok = self.tok
        self.k += 1
        node = Node(str(tok.value), [], [], None, tok.line, tok.col, False)
        self._arguments(node, 0)
        if self._is(";"):
            self.k += 1
            return node
        if self._is("{"):
            if depth + 1 > MAX_BLOCK_NESTING:
                self._error(self.tok, f"cannot nest command blocks deeper than {MAX_BLOCK_NESTING} levels")
                raise _Recover
            self.k += 1
            node.block = self._commands(depth + 1)
            if not self._is("}"):
                self._error(self.tok, f"expected '}}' (end of block), but found {self._describe(self.tok)}")
                raise _Recover
            self.k += 1
            return node
        self._error(
            self.tok,
            f"expected ';' or '{{' after command '{node.name}', but found {self._describe(self.tok)}",
        )
        raise _Recover

    def _arguments(self, node: Node, test_depth: int) -> None:
        while True:
            tok = self.tok
            if tok.kind == "tag":
                node.args.append(Argument("tag", str(tok.value), tok.line, tok.col))
                self.k += 1
            elif tok.kind == "num":
                node.args.append(Argument("number", int(tok.value), tok.line, tok.col))
                self.k += 1
            elif tok.kind == "str":
                node.args.append(Argument("string", str(tok.value), tok.line, tok.col))
                self.k += 1
            elif self._is("["):
                node.args.append(self._string_list())
            else:
                break
            if len(node.args) > MAX_ARGUMENTS:
                self._error(tok, f"too many arguments for '{node.name}' (at most {MAX_ARGUMENTS})")
                raise _Recover
        if self.tok.kind == "id":
            node.tests.append(self._test(test_depth + 1))
        elif self._is("("):
            node.has_test_list = True
            self.k += 1
            while True:
                if not self._at_identifier():
                    self._error(self.tok, f"expected a test, but found {self._describe(self.tok)}")
                    raise _Recover
                node.tests.append(self._test(test_depth + 1))
                if self._is(","):
                    self.k += 1
                    continue
                if self._is(")"):
                    self.k += 1
                    break
                self._error(
                    self.tok, f"expected ',' or ')' in test list, but found {self._describe(self.tok)}"
                )
                raise _Recover

    def _test(self, depth: int) -> Node:
        tok = self.tok
        if depth > MAX_TEST_NESTING:
            self._error(tok, f"cannot nest tests deeper than {MAX_TEST_NESTING} levels")
            raise _Recover
        self.k += 1
        node = Node(str(tok.value), [], [], None, tok.line, tok.col, True)
        self._arguments(node, depth)
        return node

    def _string_list(self) -> Argument:
        start = self.tok
        self.k += 1
        values: list[str] = []
        while True:
            if self.tok.kind != "str":
                self._error(
                    self.tok, f"expected a string in string list, but found {self._describe(self.tok)}"
                )
                raise _Recover
            values.append(str(self.tok.value))
            self.k += 1
            if self._is(","):
                self.k += 1
                continue
            if self._is("]"):
                self.k += 1
                break
            self._error(self.tok, f"expected ',' or ']' in string list, but found {self._describe(self.tok)}")
            raise _Recover
        return Argument("strlist", values, start.line, start.col)


def parse(text: str, errors: list[tuple[int, int, str]]) -> list[Node]:
    """Tokenise and parse `text`; problems are appended to `errors`."""
    tokens = Lexer(text, errors).tokens()
    return Parser(tokens, errors).parse()
