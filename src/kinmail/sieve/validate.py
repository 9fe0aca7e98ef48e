"""Sieve validation: checks a parsed script against `kinmail.sieve.spec` (commands, tags, argument types,
`require`d extensions) and the rules of each extension, then compiles strings (encoded characters, variable
references, match types) into the tree for the interpreter.

Called by `kinmail.sieve.compile_script`. Errors are collected (every problem of a script is reported) with
messages modelled on the ones Sieve users meet elsewhere. Keeps nothing on disk.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kinmail.sieve import checks
from kinmail.sieve.spec import IMPLIES, NUMBER, SPECS, STRING, STRLIST, CommandSpec, PosSpec
from kinmail.sieve.strings import (
    COMPARATORS,
    MAX_MATCH_INDEX,
    RELATIONS,
    VAR_NAME,
    EncodingError,
    Matcher,
    RegexError,
    Template,
    compile_regex,
    decode_encoded_characters,
    parse_template,
)
from kinmail.sieve.syntax import Argument, Node

ErrorList = list[tuple[int, int, str]]
MAX_VARIABLE_NAME = 64
# RFC 5463 §4: extensions that change how a script is parsed cannot be tested with ihave
IHAVE_RESTRICTED = frozenset({"encoded-character", "variables"})
MAX_VARIABLES = 255

KIND_NAMES = {"tag": "tag", "number": "number", "string": "string", "strlist": "string list"}


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


@dataclass
class IncludeContext:
    """Shared by a script and the scripts it includes while they are checked (RFC 6609 §3.2)."""

    loader: Callable[[str, bool], str | None] | None = None
    max_includes: int = 255
    max_depth: int = 10
    chain: list[tuple[bool, str]] = field(default_factory=list)
    seen: set[tuple[bool, str]] = field(default_factory=set)


class Validator:
    """Validates one script; `errors` collects `(line, column, message)`."""

    def __init__(
        self,
        allowed: Iterable[str],
        errors: ErrorList,
        context: IncludeContext | None = None,
        options: dict[str, object] | None = None,
    ) -> None:
        self.context = context or IncludeContext()
        self.options: dict[str, object] = options or {}
        self.local_vars: set[str] = set()
        self.allowed = set(allowed)
        self.errors = errors
        self.required: set[str] = set()
        self.reported_unknown: set[str] = set()
        self.loops: list[str | None] = []
        self.warnings: ErrorList = []
        self.unknown_tags = 0
        self.too_many_variables = False

    def error(self, node: Node | Argument, message: str) -> None:
        self.errors.append((node.line, node.col, message))

    def warning(self, node: Node | Argument, message: str) -> None:
        self.warnings.append((node.line, node.col, message))

    def has(self, ext: str) -> bool:
        return ext in self.required

    # ------------------------------------------------------------------------------------------------------

    def run(self, nodes: list[Node]) -> None:
        seen_other = False
        for node in nodes:
            if node.name == "require" and not node.is_test:
                if seen_other:
                    self.error(
                        node,
                        "require commands can only be placed at top level at the beginning of the file",
                    )
                    continue
                self._require(node)
            else:
                if not seen_other and nodes[0].name == "require":
                    self._dependencies(nodes[0])
                seen_other = True
        if not seen_other and nodes and nodes[0].name == "require":
            self._dependencies(nodes[0])
        self._block(nodes, top=True)

    def _dependencies(self, node: Node) -> None:
        """Extensions that only make sense with others (RFC 5703 §7: extracttext needs variables and
        foreverypart)."""
        if "extracttext" in self.required:
            for needed in ("variables", "foreverypart"):
                if needed not in self.required:
                    self.error(
                        node, f"the extracttext extension cannot be used without the {needed} extension"
                    )

    def _require(self, node: Node) -> None:
        spec = SPECS["require"]
        if not self._shape(node, spec):
            return
        if not self._subtests(node, spec) or not self._block_shape(node, spec):
            return
        if node.pos[0].kind == "number":
            return
        arg = node.pos[0]
        for cap in arg.strings:
            if cap in self.allowed:
                self.required.add(cap)
                self.required.update(IMPLIES.get(cap, ()))
            elif cap in ("keep", "discard", "redirect", "stop", "if", "elsif", "else", "require"):
                self.error(
                    arg,
                    f"require command: '{cap}' is not known as a Sieve capability, "
                    "but it is known as a Sieve command that is always available",
                )
            else:
                self.error(arg, f"require command: unknown Sieve capability '{cap}'")

    def _block(self, nodes: list[Node], top: bool = False) -> None:
        prev: str | None = None
        for node in nodes:
            if node.name == "require" and not node.is_test:
                if not top:
                    self.error(
                        node,
                        "require commands can only be placed at top level at the beginning of the file",
                    )
                prev = None
                continue
            if node.name in ("elsif", "else") and prev not in ("if", "elsif"):
                self.error(node, f"the {node.name} command must follow an if or elseif command")
            self._node(node)
            prev = node.name

    def _node(self, node: Node) -> None:
        spec = SPECS.get(node.name)
        what = "test" if node.is_test else "command"
        if spec is None or (spec.ext and spec.ext not in self.required):
            key = f"{what}:{node.name}"
            if key in self.reported_unknown:
                return  # the script already fails because of it: say it once
            self.reported_unknown.add(key)
            self.error(node, f"unknown {what} '{node.name}' (only reported once at first occurrence)")
            return
        if spec.test != node.is_test and not spec.both:
            kind = "test" if spec.test else "command"
            self.error(node, f"attempted to use {kind} '{node.name}' as {what}")
            return
        args_ok = self._shape(node, spec)
        sub_ok = self._subtests(node, spec)
        unknown_before = self.unknown_tags
        if spec.subtests != "none":
            for sub in node.tests:
                self._node(sub)
        # an unknown tag in a sub-test makes the rest of this command's checks meaningless
        block_ok = (
            args_ok and sub_ok and (self.unknown_tags != unknown_before or self._block_shape(node, spec))
        )
        if args_ok and sub_ok and block_ok:
            self._compile_strings(node, spec)
            check = checks.CHECKS.get(node.name)
            if check is not None:
                check(self, node)
        if (
            node.block is not None
            and node.name in ("if", "elsif")
            and node.tests
            and node.tests[0].name == "ihave"
        ):
            self._ihave_block(node)
        elif node.block is not None:
            if node.name == "foreverypart":
                name = node.tags.get("name")
                self.loops.append(str(name.value) if name is not None else None)
                self._block(node.block)
                self.loops.pop()
            else:
                self._block(node.block)

    def _ihave_block(self, node: Node) -> None:
        """RFC 5463 §4: the block of `if ihave [...]` is checked with those extensions enabled when we have
        them, and not at all when we do not (it can never run)."""
        assert node.block is not None
        test = node.tests[0]
        caps = [str(c) for c in (test.pos[0].strings if test.pos else [])]
        if not self.has("ihave") or not all(c in self.allowed and c not in IHAVE_RESTRICTED for c in caps):
            node.data["never"] = True
            return
        added = [c for c in caps if c not in self.required]
        self.required.update(added)
        try:
            self._block(node.block)
        finally:
            self.required.difference_update(added)

    def _subtests(self, node: Node, spec: CommandSpec) -> bool:
        what = "test" if spec.test else "command"
        label = f"the {node.name} {what}"
        if spec.subtests == "none":
            if not node.tests:
                return True
            first = node.tests[0]
            if not node.has_test_list and any(t.name == first.name for t in spec.tags):
                self.error(node, f"missing colon ':' before ':{first.name}' tag in {node.name} {what}")
                return False
            other = SPECS.get(first.name)
            if not spec.test and not node.has_test_list and (other is None or not other.test):
                self.error(node, f"missing semicolon ';' after {node.name} command")
                return False
            self.error(node, f"{label} accepts no sub-tests, but tests are specified")
            return False
        if spec.subtests == "one":
            if node.has_test_list:
                self.error(node, f"{label} requires one sub-test, but a list of tests is specified")
                return False
            if len(node.tests) != 1:
                self.error(node, f"{label} requires one sub-test, but none is specified")
                return False
            return True
        if not node.has_test_list or not node.tests:
            self.error(node, f"{label} requires a list of sub-tests, but a single test or none is specified")
            return False
        return True

    def _block_shape(self, node: Node, spec: CommandSpec) -> bool:
        label = f"the {node.name} command"
        if spec.test:
            return True
        if spec.block and node.block is None:
            self.error(node, f"{label} requires a command block, but it is missing")
            return False
        if not spec.block and node.block is not None:
            self.error(node, f"{label} does not accept a command block, but one is specified anyway")
            return False
        return True

    def _shape(self, node: Node, spec: CommandSpec) -> bool:
        """Check tags and positional arguments; fill `node.tags` and `node.pos`."""
        what = "test" if spec.test else "command"
        label = f"the {node.name} {what}"
        tagspecs = {t.name: t for t in spec.tags if t.ext is None or t.ext in self.required}
        groups: dict[str, str] = {}
        args = node.args
        i = 0
        positional: list[Argument] = []
        while i < len(args):
            arg = args[i]
            if arg.kind == "tag":
                name = str(arg.value)
                if positional and name not in tagspecs and not node.is_test:
                    i += 1
                    continue  # like other implementations, a stray unknown tag at the end of a command is ignored
                if positional and name in tagspecs:
                    self.error(
                        arg,
                        f"encountered an unexpected tagged argument ':{name}' while validating positional arguments "
                        f"for {label}",
                    )
                    return False
                ts = tagspecs.get(name)
                if ts is None:
                    self.unknown_tags += 1
                    self.error(
                        arg,
                        f"unknown tagged argument ':{name}' for {label} (reported only once at first occurrence)",
                    )
                    return False
                if name in node.tags:
                    self.error(arg, f"encountered duplicate tag ':{name}' for {label}")
                    return False
                if ts.group is not None:
                    other = groups.get(ts.group)
                    if other is not None and other != name:
                        self.error(
                            arg,
                            f"{label} cannot take both the :{other} and the :{name} tag (conflicting arguments)",
                        )
                        return False
                    groups[ts.group] = name
                value: Argument | None = None
                if ts.value is not None:
                    nxt = args[i + 1] if i + 1 < len(args) else None
                    if nxt is None or not _fits(nxt, ts.value):
                        found = (
                            "none"
                            if nxt is None
                            else f"{_article(KIND_NAMES[nxt.kind])} {KIND_NAMES[nxt.kind]}"
                        )
                        wanted = KIND_NAMES[ts.value]
                        self.error(
                            arg,
                            f"the :{name} tag for {label} requires {_article(wanted)} {wanted} argument, "
                            f"but {found} was found",
                        )
                        return False
                    value = nxt
                    i += 1
                node.tags[name] = value
                i += 1
                continue
            positional.append(arg)
            i += 1
        want: tuple[PosSpec, ...] = spec.pos
        minimum = len(want) if spec.min_pos is None else spec.min_pos
        optional_last = bool(spec.data.get("optional_last"))
        if optional_last:
            minimum = len(want) - 1
        if len(positional) < minimum or len(positional) > len(want):
            if minimum == len(want):
                count = f"{len(want)} positional argument(s)"
            else:
                count = f"{minimum} or {len(want)} positional arguments"
            n = len(positional)
            self.error(node, f"{label} requires {count}, but {n} {'was' if n == 1 else 'were'} specified")
            return False
        use = want
        if len(positional) < len(want):
            use = want[: len(positional)] if optional_last else want[len(want) - len(positional) :]
        for n, (arg, ps) in enumerate(zip(positional, use, strict=True), 1):
            if not _fits(arg, ps.kind):
                self.error(
                    arg,
                    f"{label} expects {_article(KIND_NAMES[ps.kind])} {KIND_NAMES[ps.kind]} as argument "
                    f"{n} ({ps.label}), but {_article(KIND_NAMES[arg.kind])} {KIND_NAMES[arg.kind]} was found",
                )
                return False
        node.pos = positional
        node.data["pos_specs"] = use
        return True

    def _compile_strings(self, node: Node, spec: CommandSpec) -> None:
        variables = self.has("variables")
        encoded = self.has("encoded-character")
        tagspecs = {t.name: t for t in spec.tags}
        pairs: list[tuple[Argument, bool]] = []
        for name, arg in node.tags.items():
            if arg is not None:
                pairs.append((arg, tagspecs[name].expand))
        specs = node.data["pos_specs"]
        assert isinstance(specs, tuple)
        for arg, ps in zip(node.pos, specs, strict=True):
            pairs.append((arg, ps.expand))
        for arg, expand in pairs:
            if arg.kind == "number":
                continue
            values = arg.strings
            if encoded:
                decoded = []
                for v in values:
                    try:
                        decoded.append(decode_encoded_characters(v))
                    except EncodingError as exc:
                        self.error(arg, str(exc))
                        decoded.append(v)
                values = decoded
                arg.value = decoded if arg.kind == "strlist" else decoded[0]
            arg.tmpl = [parse_template(v) if (variables and expand) else v for v in values]
            for t in arg.tmpl:
                if isinstance(t, Template):
                    self._check_references(arg, t)

    def namespaces(self) -> set[str]:
        out = set()
        if self.has("include"):
            out.add("global")
        if self.has("vnd.dovecot.environment"):
            out.add("env")
        if self.has("vnd.dovecot.testsuite"):
            out.add("tst")
        return out

    def _check_references(self, arg: Argument, template: Template) -> None:
        for part in template.parts:
            if isinstance(part, str):
                continue
            if part[0].isdigit():
                if int(part[0]) > MAX_MATCH_INDEX:
                    self.error(arg, f"match value index {int(part[0])} out of range (max: {MAX_MATCH_INDEX})")
            elif len(part) > 1 and part[0] not in self.namespaces():
                self.error(arg, f"referring to variable in unknown namespace '{part[0]}'")

    def declare_variable(self, node: Node | Argument, name: str) -> None:
        """Note a variable the script sets (RFC 5229 §3); errors for bad names and too many variables."""
        parts = name.split(".")
        if len(parts) > 1:
            if parts[0].lower() not in self.namespaces() or parts[0].lower() in ("env", "tst"):
                self.error(node, f"referring to variable in unknown namespace '{parts[0]}'")
            elif len(parts) != 2 or not VAR_NAME.match(parts[1]):
                self.error(node, f"invalid variable name '{name}'")
            return
        if not VAR_NAME.match(name):
            self.error(node, f"invalid variable name '{name}'")
            return
        if len(name) > MAX_VARIABLE_NAME:
            self.error(node, f"invalid variable name '{name[: MAX_VARIABLE_NAME + 10]}...' (too long)")
            return
        lname = name.lower()
        if lname not in self.local_vars:
            if len(self.local_vars) >= MAX_VARIABLES:
                if not self.too_many_variables:
                    self.too_many_variables = True
                    self.error(
                        node,
                        f"(implicit) declaration of new variable '{name}' exceeds the limit "
                        f"(max variables: {MAX_VARIABLES})",
                    )
                return
            self.local_vars.add(lname)

    # helpers used by the per-command checks -------------------------------------------------------------

    def matcher(self, node: Node, default_comparator: str = "i;ascii-casemap") -> Matcher:
        """Compile the match type and comparator tags of `node` (RFC 5228 §2.7, RFC 5231)."""
        comparator = default_comparator
        carg = node.tags.get("comparator")
        what = "test" if node.is_test else "command"
        if carg is not None:
            comparator = str(carg.value)
            if comparator not in COMPARATORS or (
                comparator == "i;ascii-numeric" and not self.has("comparator-i;ascii-numeric")
            ):
                self.error(carg, f"unknown comparator '{comparator}'")
                comparator = default_comparator
        kind, relation = "is", ""
        for name in ("is", "contains", "matches", "regex", "value", "count", "list"):
            if name in node.tags:
                kind = name
                break
        if kind in ("value", "count"):
            rel_arg = node.tags[kind]
            assert rel_arg is not None
            relation = str(rel_arg.value).lower()
            if relation not in RELATIONS:
                self.error(rel_arg, f"invalid relational match type '{relation}' for :{kind}")
                relation = "eq"
        if comparator == "i;ascii-numeric" and kind in ("contains", "matches", "regex"):
            self.error(
                node,
                f"the comparator 'i;ascii-numeric' of the {node.name} {what} "
                f"does not support the :{kind} match type",
            )
        if kind == "regex":
            keys = node.pos[-1] if node.pos else None
            if keys is not None and keys.tmpl is not None:
                for t in keys.tmpl:
                    if isinstance(t, str):
                        try:
                            compile_regex(t, comparator)
                        except RegexError as exc:
                            self.error(keys, f"invalid regular expression '{t}' for regex match: {exc}")
        return Matcher(kind, comparator, relation)

    def constant(self, arg: Argument) -> list[str] | None:
        """The strings of `arg` when none holds a variable reference, else None."""
        if arg.tmpl is None:
            return arg.strings
        if any(isinstance(t, Template) for t in arg.tmpl):
            return None
        return [str(t) for t in arg.tmpl]

    def include(self, node: Node, name: str, personal: bool, optional: bool) -> None:
        """Check the script `name` includes (RFC 6609): present, not circular, within limits, compiling."""
        from kinmail.sieve.syntax import parse

        ctx = self.context
        if ctx.loader is None:
            return
        key = (personal, name)
        if key in ctx.chain:
            self.error(node, f"circular include of script '{name}'")
            return
        if len(ctx.chain) >= ctx.max_depth:
            self.error(node, f"cannot nest includes deeper than {ctx.max_depth} levels")
            return
        text = ctx.loader(name, personal)
        if text is None:
            if not optional:
                self.error(
                    node, f"included {'personal' if personal else 'global'} script '{name}' does not exist"
                )
            return
        if key not in ctx.seen:
            if len(ctx.seen) >= ctx.max_includes:
                self.error(
                    node,
                    f"failed to include script '{name}': no more than {ctx.max_includes} includes allowed",
                )
                return
            ctx.seen.add(key)
        errors: ErrorList = []
        nodes = parse(text, errors)
        if not errors:
            ctx.chain.append(key)
            try:
                Validator(self.allowed, errors, ctx, self.options).run(nodes)
            finally:
                ctx.chain.pop()
        if errors:
            self.errors.extend(
                (line, col, f"in included script '{name}': {msg}") for line, col, msg in errors
            )
            self.error(node, f"failed to compile included script '{name}'")

    def check_header_names(self, arg: Argument, what: str) -> None:
        for name in self.constant(arg) or []:
            if not _HEADER_NAME.match(name):
                self.error(arg, f"{what}: specified header field name '{name}' is invalid")


_HEADER_NAME = re.compile(r"^[!-9;-~]+$")


def _fits(arg: Argument, kind: str) -> bool:
    if kind == NUMBER:
        return arg.kind == "number"
    if kind == STRING:
        return arg.kind == "string"
    if kind == STRLIST:
        return arg.kind in ("string", "strlist")
    return False


Check = Callable[[Validator, Node], None]
