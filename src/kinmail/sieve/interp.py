"""The Sieve interpreter: runs a compiled `Script` against a message and fills a `SieveResult` with actions
(RFC 5228 §2.10). It does no I/O: everything it needs from outside (included scripts, mailbox existence,
lists, duplicate history) comes through a `Host`.

Called by delivery (`kinmail.delivery.filtering`) and the test suite. The core commands and tests are here;
the extensions' tests live in `kinmail.sieve.interp_ext`. Keeps nothing on disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from kinmail.sieve.errors import SieveError, SieveRuntimeError
from kinmail.sieve.message import Address, SieveMessage, parse_addresses, parse_path
from kinmail.sieve.result import (
    DiscardAction,
    Envelope,
    FileIntoAction,
    Host,
    KeepAction,
    RedirectAction,
    RejectAction,
    SieveResult,
)
from kinmail.sieve.strings import (
    MAX_MATCH_INDEX,
    Matcher,
    RegexError,
    Template,
    compare_order,
    relation_holds,
    truncate_utf8,
)
from kinmail.sieve.syntax import Argument, Node

if TYPE_CHECKING:
    from kinmail.sieve import Script

MAX_INCLUDE_DEPTH = 10
MAX_INCLUDES = 255


class Stop(Exception):
    """`stop` (RFC 5228 §3.3): ends every script of this run."""


class Return(Exception):
    """`return` (RFC 6609 §3.2): ends the current (included) script."""


class Break(Exception):
    """`break` (RFC 5703 §3): leaves a foreverypart loop."""

    def __init__(self, name: str | None) -> None:
        self.name = name


Handler = Callable[["Interpreter", Node], bool]


class Interpreter:
    """Runs scripts for one message; several scripts may run in turn over the same `result`."""

    def __init__(
        self,
        message: SieveMessage | bytes,
        envelope: Envelope | None = None,
        host: Host | None = None,
        *,
        result: SieveResult | None = None,
        extensions: frozenset[str] | None = None,
    ) -> None:
        self.message = message if isinstance(message, SieveMessage) else SieveMessage(message)
        self.envelope = envelope or Envelope()
        self.host = host or Host()
        self.result = result or SieveResult(self.message)
        self.extensions = extensions
        self.vars: dict[str, str] = {}
        self.globals: dict[str, str] = {}
        self.global_names: set[str] = set()
        self.matches: list[str] = []
        self.required: frozenset[str] = frozenset()
        self.include_stack: list[str] = []
        self.included_once: set[tuple[bool, str]] = set()
        self.include_count = 0
        self.mime_part: object | None = None  # the current part inside foreverypart
        self.mime_stack: list[object] = []
        self.flags_var = "__imap4flags"
        self.internal_flags: list[str] = []
        self.testsuite: object | None = None
        self.script_name = ""
        self.stopped = False

    # running -----------------------------------------------------------------------------------------------

    def run(self, script: Script) -> SieveResult:
        """Run `script`; raises SieveRuntimeError on a runtime error (the caller decides what to keep)."""
        self.vars = {}
        self.matches = []
        self.required = script.required
        self.script_name = script.name
        try:
            self.block(script.nodes)
        except Stop:
            self.stopped = True
        except Return:
            pass
        self.result.keep_flags = tuple(self.internal_flags)
        return self.result

    def block(self, nodes: list[Node]) -> None:
        skip_else = False
        for node in nodes:
            name = node.name
            if name == "if":
                skip_else = self.test(node.tests[0])
                if skip_else:
                    assert node.block is not None
                    self.block(node.block)
                continue
            if name == "elsif":
                if skip_else:
                    continue
                skip_else = self.test(node.tests[0])
                if skip_else:
                    assert node.block is not None
                    self.block(node.block)
                continue
            if name == "else":
                if not skip_else:
                    assert node.block is not None
                    self.block(node.block)
                skip_else = False
                continue
            skip_else = False
            if name == "require":
                continue
            handler = COMMANDS.get(name)
            if handler is None:
                from kinmail.sieve import interp_ext

                handler = interp_ext.COMMANDS.get(name)
            if handler is None:
                testsuite = self.testsuite
                if testsuite is not None:
                    handler = getattr(testsuite, "commands", {}).get(name)
            if handler is None:
                raise SieveRuntimeError(f"command '{name}' is not implemented", node.line)
            handler(self, node)

    def test(self, node: Node) -> bool:
        handler = TESTS.get(node.name)
        if handler is None:
            from kinmail.sieve import interp_ext

            handler = interp_ext.TESTS.get(node.name)
        if handler is None and self.testsuite is not None:
            handler = getattr(self.testsuite, "tests", {}).get(node.name)
            if handler is None and node.name == "test_message":
                handler = getattr(self.testsuite, "commands", {}).get(node.name)
        if handler is None:
            raise SieveRuntimeError(f"test '{node.name}' is not implemented", node.line)
        return handler(self, node)

    # strings and variables ---------------------------------------------------------------------------------

    def lookup(self, parts: tuple[str, ...]) -> str:
        first = parts[0]
        if first.isdigit():
            n = int(first)
            if n <= MAX_MATCH_INDEX and n < len(self.matches):
                return self.matches[n]
            return ""
        if len(parts) == 1:
            if first in self.global_names:
                return self.globals.get(first, "")
            return self.vars.get(first, "")
        if first == "global" and len(parts) == 2 and "include" in self.required:
            return self.globals.get(parts[1], "")
        if first == "tst" and "vnd.dovecot.testsuite" in self.required:
            return self.host.namespace_value(parts) or ""
        if first == "env" and len(parts) >= 2 and "vnd.dovecot.environment" in self.required:
            from kinmail.sieve.interp_ext import environment_item

            return environment_item(self, ".".join(parts[1:]).replace("_", "-")) or ""
        return ""

    def set_var(self, name: str, value: str) -> None:
        name = name.lower()
        value = truncate_utf8(value, self.host.max_variable_size)
        if name.startswith("global."):
            self.globals[name[7:]] = value
        elif name in self.global_names:
            self.globals[name] = value
        else:
            self.vars[name] = value

    def expand(self, item: str | Template) -> str:
        if isinstance(item, str):
            return item
        return item.expand(self.lookup)

    def strs(self, arg: Argument) -> list[str]:
        tmpl = arg.tmpl
        if tmpl is None:
            return arg.strings
        return [t if isinstance(t, str) else t.expand(self.lookup) for t in tmpl]

    def str1(self, arg: Argument) -> str:
        return self.strs(arg)[0]

    def tag_str(self, node: Node, name: str) -> str | None:
        arg = node.tags.get(name)
        return None if arg is None else self.str1(arg)

    def tag_num(self, node: Node, name: str) -> int | None:
        arg = node.tags.get(name)
        return None if arg is None else int(arg.value)  # type: ignore[arg-type]

    # matching ----------------------------------------------------------------------------------------------

    def match(self, node: Node, values: list[str], keys_arg: Argument | list[str]) -> bool:
        """Apply the node's match type and comparator to `values` against the keys (RFC 5228 §2.7)."""
        m: Matcher = node.data["m"]  # type: ignore[assignment]
        keys = keys_arg if isinstance(keys_arg, list) else None
        kind = m.kind
        if kind == "count":
            if keys is None:
                keys = self.strs(keys_arg)  # type: ignore[arg-type]
            count = str(len(values))
            return any(relation_holds(m.relation, compare_order(m.comparator, count, k)) for k in keys)
        if kind == "list":
            if keys is None:
                keys = self.strs(keys_arg)  # type: ignore[arg-type]
            from kinmail.sieve.checks import list_name

            for k in keys:
                for v in values:
                    if self.host.list_contains(list_name(k), v):
                        if "variables" in self.required:
                            self.matches = [v]
                        return True
            return False
        capture = kind in ("matches", "regex") and "variables" in self.required
        for value in values:
            # keys are expanded per value: with :matches they may refer to earlier match values
            for key in keys if keys is not None else self.strs(keys_arg):  # type: ignore[arg-type]
                try:
                    r = m.match_one(value, key)
                except RegexError as exc:
                    self.host.warning(
                        f"line {node.line}: invalid regular expression '{key}' for regex match: {exc}"
                    )
                    continue
                if r is True:
                    return True
                if isinstance(r, list):
                    if capture:
                        self.matches = r[: MAX_MATCH_INDEX + 1]
                    return True
        return False

    # header access -----------------------------------------------------------------------------------------

    def header_values(self, node: Node, names: list[str]) -> list[str]:
        if "mime" in node.tags:
            from kinmail.sieve.interp_ext import mime_header_values

            return mime_header_values(self, node, names)
        values: list[str] = []
        for name in names:
            values.extend(self.message.header(name))
        idx = self.tag_num(node, "index")
        if idx is not None:
            values = _pick_index(values, idx, "last" in node.tags)
        return values

    def address_values(self, node: Node, addresses: Iterator[Address] | list[Address]) -> list[str]:
        part = "all"
        for p in ("localpart", "domain", "user", "detail"):
            if p in node.tags:
                part = p
                break
        out: list[str] = []
        delimiter = self.host.delimiter
        for a in addresses:
            v = address_part(a, part, delimiter)
            if v is not None:
                out.append(v)
        return out


def _pick_index(values: list[str], idx: int, last: bool) -> list[str]:
    if idx < 1 or idx > len(values):
        return []
    return [values[-idx] if last else values[idx - 1]]


def address_part(a: Address, part: str, delimiter: str = "+") -> str | None:
    """RFC 5228 §2.7.4 and RFC 5233 address parts; None when the part does not exist (:detail with no
    separator). Each character of `delimiter` separates user and detail (as Postfix's recipient_delimiter)."""
    if part == "all":
        return a.all
    if part == "localpart":
        return a.local
    if part == "domain":
        return a.domain
    cut = min((i for i in (a.local.find(d) for d in delimiter or "+") if i >= 0), default=-1)
    if part == "user":
        return a.local if cut < 0 else a.local[:cut]
    return None if cut < 0 else a.local[cut + 1 :]


# commands --------------------------------------------------------------------------------------------------


def _flags_of(it: Interpreter, node: Node) -> tuple[str, ...]:
    arg = node.tags.get("flags")
    if arg is None:
        return tuple(it.internal_flags)
    from kinmail.sieve.interp_ext import normalize_flags

    return tuple(normalize_flags(it.strs(arg)))


def cmd_stop(it: Interpreter, node: Node) -> bool:
    raise Stop


def _snapshot(it: Interpreter) -> bytes | None:
    return it.message.to_bytes() if it.message.edited else None


def cmd_keep(it: Interpreter, node: Node) -> bool:
    it.result.add(KeepAction(_flags_of(it, node), node.line, _snapshot(it)), it.host)
    return True


def cmd_discard(it: Interpreter, node: Node) -> bool:
    it.result.add(DiscardAction(node.line), it.host)
    return True


def cmd_fileinto(it: Interpreter, node: Node) -> bool:
    from kinmail.sieve.checks import mailbox_name_problem

    folder = it.str1(node.pos[0])
    problem = mailbox_name_problem(folder)
    if problem:
        raise SieveRuntimeError(f"fileinto: invalid folder name '{folder}': {problem}", node.line)
    action = FileIntoAction(
        folder,
        _flags_of(it, node),
        copy="copy" in node.tags,
        create="create" in node.tags,
        specialuse=it.tag_str(node, "specialuse") or "",
        line=node.line,
        snapshot=_snapshot(it),
    )
    it.result.add(action, it.host)
    return True


def cmd_redirect(it: Interpreter, node: Node) -> bool:
    from kinmail.sieve.checks import normalize_address

    given = it.str1(node.pos[0])
    if "list" in node.tags:
        from kinmail.sieve.checks import list_name

        for member in it.host.list_members(list_name(given)):
            it.result.add(RedirectAction(member, "copy" in node.tags, node.line), it.host)
        return True
    address = normalize_address(given)
    if address is None:
        raise SieveRuntimeError(f"redirect: specified redirect address '{given}' is invalid", node.line)
    it.result.add(RedirectAction(address, "copy" in node.tags, node.line, _snapshot(it)), it.host)
    return True


def cmd_reject(it: Interpreter, node: Node) -> bool:
    it.result.add(RejectAction(it.str1(node.pos[0]), node.name == "ereject", node.line), it.host)
    return True


COMMANDS: dict[str, Handler] = {
    "stop": cmd_stop,
    "keep": cmd_keep,
    "discard": cmd_discard,
    "fileinto": cmd_fileinto,
    "redirect": cmd_redirect,
    "reject": cmd_reject,
    "ereject": cmd_reject,
}

# tests -----------------------------------------------------------------------------------------------------


def test_true(it: Interpreter, node: Node) -> bool:
    return True


def test_false(it: Interpreter, node: Node) -> bool:
    return False


def test_not(it: Interpreter, node: Node) -> bool:
    return not it.test(node.tests[0])


def test_allof(it: Interpreter, node: Node) -> bool:
    return all(it.test(t) for t in node.tests)


def test_anyof(it: Interpreter, node: Node) -> bool:
    return any(it.test(t) for t in node.tests)


def test_header(it: Interpreter, node: Node) -> bool:
    values = it.header_values(node, it.strs(node.pos[0]))
    return it.match(node, values, node.pos[1])


def test_address(it: Interpreter, node: Node) -> bool:
    names = it.strs(node.pos[0])
    if "mime" in node.tags or "index" in node.tags:
        addresses = [a for v in it.header_values(node, names) for a in parse_addresses(v)]
    else:
        addresses = [a for name in names for a in it.message.addresses(name)]
    return it.match(node, it.address_values(node, addresses), node.pos[1])


def test_envelope(it: Interpreter, node: Node) -> bool:
    env = it.envelope
    addresses: list[Address] = []
    for part in it.strs(node.pos[0]):
        p = part.lower()
        if p == "from":
            value = env.sender
        elif p == "to":
            value = env.recipient
        elif p == "orig_to":
            value = env.orig_recipient or env.recipient
        elif p == "auth":
            value = env.auth
            if not value:
                continue
        else:
            continue
        if value in ("", "<>"):
            addresses.append(Address("", "", ""))
        else:
            parsed = parse_path(value)
            if parsed is not None:
                addresses.append(parsed)
    values: list[str] = []
    part_name = "all"
    for p in ("localpart", "domain", "user", "detail"):
        if p in node.tags:
            part_name = p
    for a in addresses:
        if not a.raw:
            values.append("")  # the null reverse-path matches "" whatever the address part (RFC 5228 §5.4)
            continue
        v = address_part(a, part_name, it.host.delimiter)
        if v is not None:
            values.append(v)
    return it.match(node, values, node.pos[1])


def test_exists(it: Interpreter, node: Node) -> bool:
    if "mime" in node.tags:
        from kinmail.sieve.interp_ext import mime_exists

        return mime_exists(it, node)
    return all(it.message.has_header(n) for n in it.strs(node.pos[0]))


def test_size(it: Interpreter, node: Node) -> bool:
    limit = int(node.pos[0].value)  # type: ignore[arg-type]
    size = it.message.size
    return size > limit if "over" in node.tags else size < limit


TESTS: dict[str, Handler] = {
    "true": test_true,
    "false": test_false,
    "not": test_not,
    "allof": test_allof,
    "anyof": test_anyof,
    "header": test_header,
    "address": test_address,
    "envelope": test_envelope,
    "exists": test_exists,
    "size": test_size,
}


def run_scripts(
    scripts: list[Script], message: bytes, envelope: Envelope, host: Host
) -> tuple[SieveResult, list[str]]:
    """Run scripts in turn over one result; a `stop` ends all. Errors of a script are returned (the
    script's actions up to the error are kept) and the next script still runs."""
    interp = Interpreter(message, envelope, host)
    errors: list[str] = []
    for script in scripts:
        try:
            interp.run(script)
        except (SieveRuntimeError, SieveError) as exc:
            errors.append(str(exc))
        if interp.stopped:
            break
    return interp.result, errors
