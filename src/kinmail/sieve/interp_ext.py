"""The Sieve interpreter's extension commands and tests: variables, imap4flags, body, vacation, date, mailbox,
metadata, include, environment, duplicate, editheader, enotify, spamtest/virustest, extlists, ihave,
special-use, foreverypart/mime/extracttext and vnd.dovecot.debug.

Registered by name in `COMMANDS` and `TESTS`, looked up by `kinmail.sieve.interp.Interpreter`. No I/O: outside
knowledge comes through the `Host`. Keeps nothing on disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from kinmail.sieve import dates, mime
from kinmail.sieve.errors import SieveError, SieveRuntimeError
from kinmail.sieve.interp import MAX_INCLUDE_DEPTH, MAX_INCLUDES, Break, Interpreter, Return, _pick_index
from kinmail.sieve.message import decode_header_value
from kinmail.sieve.result import NotifyAction, ReportAction, VacationAction
from kinmail.sieve.strings import apply_modifiers
from kinmail.sieve.syntax import Node

Handler = Callable[[Interpreter, Node], bool]

# variables (RFC 5229) --------------------------------------------------------------------------------------

MODIFIER_NAMES = (
    "lower",
    "upper",
    "lowerfirst",
    "upperfirst",
    "quotewildcard",
    "quoteregex",
    "encodeurl",
    "length",
)


def cmd_set(it: Interpreter, node: Node) -> bool:
    value = it.str1(node.pos[1])
    mods = [m for m in MODIFIER_NAMES if m in node.tags]
    if mods:
        value = apply_modifiers(value, mods, it.host.max_variable_size)
    it.set_var(str(node.pos[0].value), value)
    return True


def test_string(it: Interpreter, node: Node) -> bool:
    sources = it.strs(node.pos[0])
    m = node.data["m"]
    if getattr(m, "kind", "") == "count":
        sources = [s for s in sources if s != ""]
    return it.match(node, sources, node.pos[1])


# imap4flags (RFC 5232) -------------------------------------------------------------------------------------


def normalize_flags(items: list[str]) -> list[str]:
    """Split flag strings on spaces and drop duplicates (case-insensitively), keeping the first spelling."""
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        for flag in item.split():
            key = flag.lower()
            if key not in seen:
                seen.add(key)
                out.append(flag)
    return out


def _get_flags(it: Interpreter, var: str | None) -> list[str]:
    if var is None:
        return list(it.internal_flags)
    return normalize_flags([it.lookup((var.lower(),))])


def _put_flags(it: Interpreter, var: str | None, flags: list[str]) -> None:
    if var is None:
        it.internal_flags = flags
    else:
        it.set_var(var, " ".join(flags))


def cmd_flags(it: Interpreter, node: Node) -> bool:
    var = str(node.pos[0].value) if len(node.pos) == 2 else None
    given = normalize_flags(it.strs(node.pos[-1]))
    if node.name == "setflag":
        new = given
    else:
        current = _get_flags(it, var)
        if node.name == "addflag":
            new = normalize_flags(current + given)
        else:
            drop = {f.lower() for f in given}
            new = [f for f in current if f.lower() not in drop]
    _put_flags(it, var, new)
    return True


def test_hasflag(it: Interpreter, node: Node) -> bool:
    if len(node.pos) == 2:
        flags: list[str] = []
        for var in node.pos[0].strings:
            flags.extend(_get_flags(it, var))
        flags = normalize_flags(flags)
    else:
        flags = list(it.internal_flags)
    m = node.data["m"]
    keys = it.strs(node.pos[-1])
    if getattr(m, "kind", "") not in ("count", "value"):
        keys = normalize_flags(keys)
    return it.match(node, flags, keys)


# body (RFC 5173) -------------------------------------------------------------------------------------------


def test_body(it: Interpreter, node: Node) -> bool:
    if "raw" in node.tags:
        texts = [it.message.body.decode("utf-8", errors="replace")] if it.message.has_body else []
    else:
        arg = node.tags.get("content")
        types = it.strs(arg) if arg is not None else ["text"]
        texts = mime.body_texts(it.message, types, html_to_text="content" not in node.tags)
    # RFC 5173 §6: the body test does not set match variables
    saved = it.matches
    found = it.match(node, texts, node.pos[0])
    it.matches = saved
    return found


# vacation (RFC 5230, RFC 6131) -----------------------------------------------------------------------------


def cmd_vacation(it: Interpreter, node: Node) -> bool:
    days = it.tag_num(node, "days")
    seconds = it.tag_num(node, "seconds")
    if seconds is None:
        seconds = (7 if days is None else days) * 86400
    reason = it.str1(node.pos[0])
    subject = it.tag_str(node, "subject")
    from_ = it.tag_str(node, "from")
    addresses = tuple(it.strs(node.tags["addresses"])) if node.tags.get("addresses") is not None else ()  # type: ignore[arg-type]
    handle = it.tag_str(node, "handle")
    if handle is None:
        # RFC 5230 §4.2: without :handle, the reason, subject, from and mime flag identify the message
        basis = "\0".join([reason, subject or "", from_ or "", "mime" if "mime" in node.tags else ""])
        handle = hashlib.sha256(basis.encode("utf-8")).hexdigest()[:32]
    action = VacationAction(
        reason, subject, from_, addresses, "mime" in node.tags, handle, max(0, seconds), node.line
    )
    it.result.add(action, it.host)
    return True


# date (RFC 5260) -------------------------------------------------------------------------------------------


def test_date(it: Interpreter, node: Node) -> bool:
    name = it.str1(node.pos[0])
    part = it.str1(node.pos[1]).lower()
    values = it.message.header(name)
    idx = it.tag_num(node, "index")
    if idx is not None:
        values = _pick_index(values, idx, "last" in node.tags)
    zone = it.tag_str(node, "zone")
    out: list[str] = []
    for value in values:
        if name.lower() == "received":
            value = value.rpartition(";")[2]
        when = dates.parse_date(value)
        if when is None:
            continue
        if "originalzone" not in node.tags:
            when = dates.to_zone(when, zone, it.host.now())
            if when is None:
                return False
        v = dates.date_part(when, part)
        if v is not None:
            out.append(v)
        break
    if not out and getattr(node.data.get("m"), "kind", "") != "count":
        return False
    return it.match(node, out, node.pos[2])


def test_currentdate(it: Interpreter, node: Node) -> bool:
    now = it.host.now()
    zone = it.tag_str(node, "zone")
    when = dates.to_zone(now, zone, now)
    if when is None:
        return False
    v = dates.date_part(when, it.str1(node.pos[0]).lower())
    return v is not None and it.match(node, [v], node.pos[1])


# mailbox, metadata, special-use (RFC 5490, RFC 8579) -------------------------------------------------------


def test_mailboxexists(it: Interpreter, node: Node) -> bool:
    return all(it.host.mailbox_exists(n) for n in it.strs(node.pos[0]))


def test_metadata(it: Interpreter, node: Node) -> bool:
    if node.name == "metadata":
        mailbox, name = it.str1(node.pos[0]), it.str1(node.pos[1])
    else:
        mailbox, name = None, it.str1(node.pos[0])
    value = it.host.metadata(mailbox, name)
    if value is None:
        return False
    return it.match(node, [value], node.pos[-1])


def test_metadataexists(it: Interpreter, node: Node) -> bool:
    if node.name == "metadataexists":
        mailbox: str | None = it.str1(node.pos[0])
    else:
        mailbox = None
    return all(it.host.metadata(mailbox, n) is not None for n in it.strs(node.pos[-1]))


def test_specialuse_exists(it: Interpreter, node: Node) -> bool:
    mailbox = it.str1(node.pos[0]) if len(node.pos) == 2 else None
    return it.host.special_use_exists(mailbox, it.strs(node.pos[-1]))


# include (RFC 6609) ----------------------------------------------------------------------------------------


def cmd_include(it: Interpreter, node: Node) -> bool:
    from kinmail.sieve import compile_script

    name = it.str1(node.pos[0])
    personal = "global" not in node.tags
    key = (personal, name)
    if "once" in node.tags and key in it.included_once:
        return True
    if len(it.include_stack) >= MAX_INCLUDE_DEPTH:
        raise SieveRuntimeError(f"include: nesting too deep (more than {MAX_INCLUDE_DEPTH})", node.line)
    label = ("personal:" if personal else "global:") + name
    if label in it.include_stack:
        raise SieveRuntimeError(f"include: circular include of script '{name}'", node.line)
    it.include_count += 1
    if it.include_count > MAX_INCLUDES:
        raise SieveRuntimeError("include: too many included scripts", node.line)
    text = it.host.include(name, personal)
    if text is None:
        if "optional" in node.tags:
            return True
        raise SieveRuntimeError(f"include: script '{name}' does not exist", node.line)
    try:
        script = compile_script(text, extensions=it.extensions, name=name)
    except SieveError as exc:
        raise SieveRuntimeError(f"include: failed to compile script '{name}': {exc}", node.line) from None
    it.included_once.add(key)
    saved = (it.vars, it.global_names, it.required, it.matches)
    it.vars, it.global_names, it.required, it.matches = {}, set(), script.required, []
    it.include_stack.append(label)
    try:
        it.block(script.nodes)
    except Return:
        pass
    finally:
        it.include_stack.pop()
        it.vars, it.global_names, it.required, it.matches = saved
    return True


def cmd_return(it: Interpreter, node: Node) -> bool:
    raise Return


def cmd_global(it: Interpreter, node: Node) -> bool:
    for name in node.pos[0].strings:
        it.global_names.add(name.lower())
    return True


# environment (RFC 5183) ------------------------------------------------------------------------------------


def environment_item(it: Interpreter, name: str) -> str | None:
    """RFC 5183 items, plus the vnd.dovecot.environment ones (default mailbox, user name)."""
    name = name.lower()
    items = it.host.environment()
    if name in items:
        return items[name]
    if "vnd.dovecot.environment" in it.required:
        if name == "vnd.dovecot.default-mailbox":
            return "INBOX"
        if name == "vnd.dovecot.username":
            return it.host.username or None
    return None


def test_environment(it: Interpreter, node: Node) -> bool:
    value = environment_item(it, it.str1(node.pos[0]))
    if value is None:
        return False
    return it.match(node, [value], node.pos[1])


# duplicate (RFC 7352) --------------------------------------------------------------------------------------


def test_duplicate(it: Interpreter, node: Node) -> bool:
    uniqueid = it.tag_str(node, "uniqueid")
    header = it.tag_str(node, "header")
    if uniqueid is not None:
        value = uniqueid
    else:
        values = it.message.header(header or "message-id")
        if not values:
            return False
        value = values[0].strip()
        if header is None:
            value = value.strip("<>")
    handle = it.tag_str(node, "handle") or ""
    kind = "uniqueid" if uniqueid is not None else "header:" + (header or "message-id").lower()
    key = hashlib.sha256("\0".join([handle, kind, value]).encode("utf-8")).hexdigest()
    seconds = it.tag_num(node, "seconds")
    seconds = 7 * 86400 if seconds is None else seconds
    pending = [k for k, _ in it.result.duplicates]
    last = "last" in node.tags
    seen = key in pending or it.host.duplicate(key, seconds, last)
    # Remembered (from now on, for `seconds`) when first seen; a repeat refreshes that time only with :last,
    # otherwise the period runs from the first delivery (RFC 7352 §3.3).
    if key not in pending and (not seen or last):
        it.result.duplicates.append((key, seconds))
    return seen


# editheader (RFC 5293) -------------------------------------------------------------------------------------

PROTECTED_HEADERS = frozenset({"received", "auto-submitted"})
MAX_HEADER_VALUE = 2048


def cmd_addheader(it: Interpreter, node: Node) -> bool:
    from kinmail.sieve import editheader

    name = it.str1(node.pos[0])
    value = it.str1(node.pos[1])
    editheader.add(it, node, name, value)
    return True


def cmd_deleteheader(it: Interpreter, node: Node) -> bool:
    from kinmail.sieve import editheader

    editheader.delete(it, node)
    return True


# enotify (RFC 5435, RFC 5436) ------------------------------------------------------------------------------


def cmd_notify(it: Interpreter, node: Node) -> bool:
    from kinmail.sieve import notify

    method = it.str1(node.pos[0])
    problem = notify.uri_problem(method)
    if problem:
        raise SieveRuntimeError(f"notify: invalid method '{method}': {problem}", node.line)
    limit = it.host.max_notifications
    if limit == 0:
        raise SieveRuntimeError("local policy prohibits the use of a notify action", node.line)
    notifies = [a for a in it.result.actions if isinstance(a, NotifyAction)]
    duplicate = any(a.method == method for a in notifies)
    if len(notifies) >= limit and not duplicate and len(it.result.actions) < it.host.max_actions:
        raise SieveRuntimeError(f"number of notify actions exceeds policy limit ({limit})", node.line)
    importance = it.tag_str(node, "importance") or "2"
    opts = node.tags.get("options")
    action = NotifyAction(
        method,
        it.tag_str(node, "from"),
        importance,
        tuple(it.strs(opts)) if opts is not None else (),
        it.tag_str(node, "message"),
        node.line,
    )
    it.result.add(action, it.host)
    return True


def test_valid_notify_method(it: Interpreter, node: Node) -> bool:
    from kinmail.sieve import notify

    return all(not notify.uri_problem(u) for u in it.strs(node.pos[0]))


def test_notify_method_capability(it: Interpreter, node: Node) -> bool:
    from kinmail.sieve import notify

    uri = it.str1(node.pos[0])
    capability = it.str1(node.pos[1]).lower()
    if notify.uri_problem(uri) or capability != "online":
        return False
    return it.match(node, ["maybe"], node.pos[2])


# spamtest, virustest (RFC 5235) ----------------------------------------------------------------------------


def test_spamtest(it: Interpreter, node: Node) -> bool:
    from kinmail.sieve import spamtest

    value = spamtest.value(it, node)
    return it.match(node, [value], node.pos[0])


# extlists (RFC 6134), ihave (RFC 5463) ---------------------------------------------------------------------


def test_valid_ext_list(it: Interpreter, node: Node) -> bool:
    return all(it.host.list_valid(n) for n in it.strs(node.pos[0]))


def test_ihave(it: Interpreter, node: Node) -> bool:
    from kinmail.sieve.spec import EXTENSIONS
    from kinmail.sieve.validate import IHAVE_RESTRICTED

    allowed = it.extensions if it.extensions is not None else frozenset(EXTENSIONS)
    return all(c in allowed and c not in IHAVE_RESTRICTED for c in node.pos[0].strings)


def cmd_error(it: Interpreter, node: Node) -> bool:
    raise SieveRuntimeError(it.str1(node.pos[0]), node.line)


# foreverypart, mime, extracttext (RFC 5703) ----------------------------------------------------------------


def cmd_foreverypart(it: Interpreter, node: Node) -> bool:
    name_arg = node.tags.get("name")
    name = str(name_arg.value) if name_arg is not None else None
    parent = it.mime_part
    if parent is None:
        top = it.message.mime
        parts = [top, *mime.children_recursive(top)]
    else:
        parts = mime.children_recursive(parent)  # type: ignore[arg-type]
    assert node.block is not None
    depth = len(it.mime_stack)
    if depth >= 4:
        raise SieveRuntimeError(
            "foreverypart: nesting too deep (more than 4 levels, counting included scripts)", node.line
        )
    it.mime_stack.append(parent)
    try:
        for part in parts:
            it.mime_part = part
            it.block(node.block)
    except Break as brk:
        if brk.name is not None and brk.name != name:
            raise
    finally:
        it.mime_part = parent
        it.mime_stack.pop()
    return True


def cmd_break(it: Interpreter, node: Node) -> bool:
    name = node.tags.get("name")
    raise Break(str(name.value) if name is not None else None)


def cmd_extracttext(it: Interpreter, node: Node) -> bool:
    part = it.mime_part
    text = mime.part_text_if_text(part) if part is not None else ""
    first = it.tag_num(node, "first")
    if first is not None:
        text = text[:first]
    mods = [m for m in MODIFIER_NAMES if m in node.tags]
    if mods:
        text = apply_modifiers(text, mods)
    it.set_var(str(node.pos[0].value), text)
    return True


def mime_header_values(it: Interpreter, node: Node, names: list[str]) -> list[str]:
    return mime.header_values(it, node, names)


def mime_exists(it: Interpreter, node: Node) -> bool:
    return mime.exists(it, node)


def cmd_report(it: Interpreter, node: Node) -> bool:
    from kinmail.sieve.checks import normalize_address
    from kinmail.sieve.report import FEEDBACK_TYPE

    feedback_type = it.str1(node.pos[0])
    if not FEEDBACK_TYPE.match(feedback_type):
        raise SieveRuntimeError(f"report: invalid feedback type '{feedback_type}'", node.line)
    address = normalize_address(it.str1(node.pos[2]))
    if address is None:
        raise SieveRuntimeError(f"report: invalid address '{it.str1(node.pos[2])}'", node.line)
    action = ReportAction(
        feedback_type, it.str1(node.pos[1]), address, "headers_only" in node.tags, node.line
    )
    it.result.add(action, it.host)
    return True


def cmd_debug_log(it: Interpreter, node: Node) -> bool:
    it.host.debug_log(it.str1(node.pos[0]))
    return True


COMMANDS: dict[str, Handler] = {
    "set": cmd_set,
    "setflag": cmd_flags,
    "addflag": cmd_flags,
    "removeflag": cmd_flags,
    "vacation": cmd_vacation,
    "include": cmd_include,
    "return": cmd_return,
    "global": cmd_global,
    "addheader": cmd_addheader,
    "deleteheader": cmd_deleteheader,
    "notify": cmd_notify,
    "error": cmd_error,
    "foreverypart": cmd_foreverypart,
    "break": cmd_break,
    "extracttext": cmd_extracttext,
    "debug_log": cmd_debug_log,
    "report": cmd_report,
}

TESTS: dict[str, Handler] = {
    "string": test_string,
    "hasflag": test_hasflag,
    "body": test_body,
    "date": test_date,
    "currentdate": test_currentdate,
    "mailboxexists": test_mailboxexists,
    "metadata": test_metadata,
    "servermetadata": test_metadata,
    "metadataexists": test_metadataexists,
    "servermetadataexists": test_metadataexists,
    "specialuse_exists": test_specialuse_exists,
    "environment": test_environment,
    "duplicate": test_duplicate,
    "valid_notify_method": test_valid_notify_method,
    "notify_method_capability": test_notify_method_capability,
    "spamtest": test_spamtest,
    "virustest": test_spamtest,
    "valid_ext_list": test_valid_ext_list,
    "ihave": test_ihave,
}

__all__ = ["COMMANDS", "TESTS", "decode_header_value"]
