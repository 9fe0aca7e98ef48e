"""Per-command compile-time checks of the Sieve validator: the rules each RFC adds beyond argument shapes
(size needs :over or :under, envelope parts, date parts, variable names, header names, addresses...).

Called only by `kinmail.sieve.validate.Validator`; each check may store compiled data in `node.data` for the
interpreter (`m`: the Matcher). Keeps nothing on disk.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from kinmail.sieve.strings import VAR_NAME
from kinmail.sieve.syntax import Argument, Node

if TYPE_CHECKING:
    from kinmail.sieve.validate import Validator

DATE_PARTS = (
    "year",
    "month",
    "day",
    "date",
    "julian",
    "hour",
    "minute",
    "second",
    "time",
    "iso8601",
    "std11",
    "zone",
    "weekday",
)
ENVELOPE_PARTS = ("from", "to", "auth", "orig_to")
ADDRESS_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "sender",
        "resent-from",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "resent-sender",
        "reply-to",
        "resent-reply-to",
        "return-receipt-to",
        "disposition-notification-to",
        "delivered-to",
        "envelope-to",
        "errors-to",
        "x-original-to",
        "x-envelope-to",
        "original-recipient",
        "mail-followup-to",
        "mail-reply-to",
    }
)
_ZONE = re.compile(r"^[+-][0-9]{4}$")
_LOCAL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
ADDR_SPEC = re.compile(
    r'^(?:[A-Za-z0-9!#$%&\'*+/=?^_`{|}~.-]+|"(?:[^"\\\r\n]|\\.)*")@'
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[^\]\\]*\])$"
)
SCRIPT_NAME_BAD = re.compile("[/\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_SCRIPT_NAME = 255


def _tag(node: Node, name: str) -> Argument | None:
    return node.tags.get(name)


def check_matching(v: Validator, node: Node) -> None:
    node.data["m"] = v.matcher(node)
    if "list" in node.tags and node.pos:
        _check_lists(v, node.pos[-1], f"{node.name} :list")


def check_address(v: Validator, node: Node) -> None:
    check_matching(v, node)
    names = v.constant(node.pos[0])
    for name in names or []:
        lname = name.lower()
        if lname not in ADDRESS_HEADERS and not lname.startswith("x-") and "mime" not in node.tags:
            v.error(
                node.pos[0],
                f"specified header '{name}' is not allowed for the address test "
                "(only headers that contain addresses)",
            )
    v.check_header_names(node.pos[0], "address test")
    _check_index(v, node)
    _check_mime_options(v, node, False)


def _check_mime_options(v: Validator, node: Node, content_options: bool) -> None:
    """RFC 5703 §4: :anychild and the content options need :mime; address and exists take no content options."""
    content = [t for t in ("type", "subtype", "contenttype", "param") if t in node.tags]
    if "mime" not in node.tags:
        for t in ("anychild", *content):
            if t in node.tags:
                v.error(node, f"the :{t} tag for the {node.name} test requires the :mime tag")
                return
        return
    if content and not content_options:
        v.error(node, f"the :{content[0]} tag cannot be used with the {node.name} test")


def _check_index(v: Validator, node: Node) -> None:
    if "last" in node.tags and "index" not in node.tags:
        v.error(node, f"the :last tag for the {node.name} test requires the :index tag as well")
    idx = node.tags.get("index")
    if idx is not None and int(idx.value) == 0:  # type: ignore[arg-type]
        v.error(idx, f"the :index tag for the {node.name} test requires a number greater than zero")


def check_header(v: Validator, node: Node) -> None:
    check_matching(v, node)
    _check_index(v, node)
    _check_mime_options(v, node, True)


def check_exists(v: Validator, node: Node) -> None:
    v.check_header_names(node.pos[0], "exists test")
    _check_mime_options(v, node, False)


def check_envelope(v: Validator, node: Node) -> None:
    check_matching(v, node)
    for part in v.constant(node.pos[0]) or []:
        if part.lower() not in ENVELOPE_PARTS:
            v.error(node.pos[0], f"specified envelope part '{part}' is not supported by the envelope test")


def check_size(v: Validator, node: Node) -> None:
    if "over" not in node.tags and "under" not in node.tags:
        v.error(node, "the size test requires either the :under or the :over tag to be specified")


def check_fileinto(v: Validator, node: Node) -> None:
    for folder in v.constant(node.pos[0]) or []:
        problem = mailbox_name_problem(folder)
        if problem:
            v.error(node.pos[0], f"fileinto command: invalid folder name '{folder}' specified: {problem}")
    _check_flags(v, node)


def mailbox_name_problem(folder: str) -> str:
    """Why `folder` is not a usable mailbox name, or ""."""
    if folder == "":
        return "name is empty"
    if "\ufffd" in folder:
        return "name is not valid UTF-8"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in folder):
        return "name contains control characters"
    return ""


def _check_flags(v: Validator, node: Node) -> None:
    pass


def list_name(name: str) -> str:
    """RFC 6134 §2.4: `:addrbook:NAME` is short for `urn:ietf:params:sieve:addrbook:NAME`."""
    prefix = "urn:ietf:params:sieve:addrbook:"
    if name.lower().startswith(prefix):
        return ":addrbook:" + name[len(prefix) :]
    return name


def _check_lists(v: Validator, arg: Argument, what: str) -> None:
    known = v.options.get("lists")
    if not isinstance(known, (set, frozenset, list, dict)):
        return
    names = {list_name(str(k)) for k in known}
    for name in v.constant(arg) or []:
        if list_name(name) not in names:
            v.error(arg, f"{what}: list '{name}' is not known")


def check_redirect(v: Validator, node: Node) -> None:
    if "list" in node.tags:
        _check_lists(v, node.pos[0], "redirect :list")
        return
    for address in v.constant(node.pos[0]) or []:
        if not valid_address(address):
            v.error(node.pos[0], f"specified redirect address '{address}' is invalid")


def normalize_address(address: str) -> str | None:
    """RFC 5228 §2.4.2.3: an RFC 5322 mailbox (addr-spec, optionally with a display name and angle brackets,
    white space allowed around its tokens); returns the bare addr-spec, or None when it is not one."""
    text = address.strip()
    m = re.match(r'^(?:[^<>"]*|"[^"]*"\s*)<([^<>]*)>\s*$', text)
    if m:
        text = m.group(1).strip()
    if '"' not in text:
        text = re.sub(r"\s*([@.])\s*", r"\1", text)
    if not ADDR_SPEC.match(text):
        return None
    local, _, domain = text.rpartition("@")
    if local.startswith('"') and local.endswith('"'):
        inner = local[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if re.match(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$", inner):
            local = inner  # quoting that is not needed is dropped (RFC 5321 §4.1.2)
    return f"{local}@{domain}"


def valid_address(address: str) -> bool:
    return normalize_address(address) is not None


def check_set(v: Validator, node: Node) -> None:
    v.declare_variable(node.pos[0], str(node.pos[0].value))


def _valid_variable(v: Validator, name: str) -> bool:
    parts = name.split(".")
    if len(parts) > 1:
        if len(parts) == 2 and parts[0].lower() == "global" and v.has("include"):
            return bool(VAR_NAME.match(parts[1]))
        return False
    return bool(VAR_NAME.match(name))


def check_string(v: Validator, node: Node) -> None:
    check_matching(v, node)


def check_flag_command(v: Validator, node: Node) -> None:
    if len(node.pos) == 2:
        v.declare_variable(node.pos[0], str(node.pos[0].value))


def check_hasflag(v: Validator, node: Node) -> None:
    check_matching(v, node)
    if len(node.pos) == 2:
        for name in node.pos[0].strings:
            v.declare_variable(node.pos[0], name)


def check_vacation(v: Validator, node: Node) -> None:
    frm = node.tags.get("from")
    if frm is not None:
        for address in v.constant(frm) or []:
            if not valid_address(address):
                v.error(frm, f"specified :from address '{address}' is invalid for vacation action")
    addresses = node.tags.get("addresses")
    if addresses is not None:
        for address in v.constant(addresses) or []:
            if not valid_address(address):
                v.error(addresses, f"specified :addresses item '{address}' is invalid for vacation action")


def _check_zone(v: Validator, node: Node) -> None:
    zone = node.tags.get("zone")
    if zone is not None:
        for z in v.constant(zone) or []:
            if not _ZONE.match(z):
                v.warning(zone, f"specified :zone argument '{z}' is not a valid timezone")


def check_date(v: Validator, node: Node) -> None:
    check_matching(v, node)
    _check_index(v, node)
    v.check_header_names(node.pos[0], "date test")
    _check_zone(v, node)
    _check_date_part(v, node.pos[1], "date")


def _check_date_part(v: Validator, arg: Argument, what: str) -> None:
    for part in v.constant(arg) or []:
        if part.lower() not in DATE_PARTS:
            v.error(
                arg, f"the {what} test requires a valid date part as second argument, but '{part}' is not"
            )


def check_currentdate(v: Validator, node: Node) -> None:
    check_matching(v, node)
    _check_zone(v, node)
    _check_date_part(v, node.pos[0], "currentdate")


def check_include(v: Validator, node: Node) -> None:
    names = v.constant(node.pos[0])
    if names is None:
        v.error(node.pos[0], "the include command requires a constant string for its value argument")
        return
    for name in names:
        if not name or len(name) > MAX_SCRIPT_NAME or SCRIPT_NAME_BAD.search(name):
            v.error(node.pos[0], f"include: invalid script name '{name}'")
            continue
        v.include(node, name, "global" not in node.tags, "optional" in node.tags)


def check_global(v: Validator, node: Node) -> None:
    for name in node.pos[0].strings:
        if not VAR_NAME.match(name):
            v.error(node.pos[0], f"invalid variable name '{name}'")
        elif name.lower() in v.local_vars:
            v.error(node.pos[0], f"global: variable '{name}' is already used as a local variable")
    if not v.has("variables"):
        v.error(node, "the global command requires the variables extension")


def check_duplicate(v: Validator, node: Node) -> None:
    hdr = node.tags.get("header")
    if hdr is not None:
        v.check_header_names(hdr, "duplicate test")


def check_addheader(v: Validator, node: Node) -> None:
    v.check_header_names(node.pos[0], "addheader command")
    limit = v.options.get("editheader_max_header_size", 2048)
    for value in v.constant(node.pos[1]) or []:
        if "\x00" in value:
            v.error(
                node.pos[1],
                f"addheader command: specified value '{value[:40]}' is invalid (contains NUL character)",
            )
        elif isinstance(limit, int) and len(value.encode("utf-8")) > limit:
            v.error(
                node.pos[1],
                f"addheader command: specified header value is too large (more than {limit} bytes)",
            )
        elif any(ord(c) < 0x20 and c not in "\t\r\n" for c in value):
            v.warning(
                node.pos[1], f"addheader command: specified value '{value[:40]}' contains control characters"
            )


def check_deleteheader(v: Validator, node: Node) -> None:
    check_matching(v, node)
    if "last" in node.tags and "index" not in node.tags:
        v.error(node, "the :last tag for the deleteheader command cannot be specified without the :index tag")
        return
    v.check_header_names(node.pos[0], "deleteheader command")
    idx = node.tags.get("index")
    if idx is not None and int(idx.value) == 0:  # type: ignore[arg-type]
        v.error(idx, "the :index tag for the deleteheader command requires a number greater than zero")


def check_notify(v: Validator, node: Node) -> None:
    from kinmail.sieve import notify

    if v.options.get("max_notifications") == 0:
        v.error(node, "notify command: local policy prohibits the use of a notify action")
        return
    opts = node.tags.get("options")
    if opts is not None:
        for option in v.constant(opts) or []:
            problem = notify.option_problem(option)
            if problem:
                v.error(opts, f"notify command: {problem}")

    for uri in v.constant(node.pos[0]) or []:
        problem = notify.uri_problem(uri)
        if problem:
            v.error(node.pos[0], f"notify command: invalid method '{uri}': {problem}")
    imp = node.tags.get("importance")
    if imp is not None:
        for value in v.constant(imp) or []:
            if value not in ("1", "2", "3"):
                v.error(imp, f"notify command: invalid :importance value '{value}'")
    frm = node.tags.get("from")
    if frm is not None:
        for value in v.constant(frm) or []:
            if not valid_address(value):
                v.error(frm, f"notify command: invalid :from address '{value}'")


MAX_FOREVERYPART_DEPTH = 4


def check_foreverypart(v: Validator, node: Node) -> None:
    if len(v.loops) >= MAX_FOREVERYPART_DEPTH:
        v.error(
            node,
            f"the nested foreverypart loop exceeds the nesting limit (max {MAX_FOREVERYPART_DEPTH} levels)",
        )


def check_break(v: Validator, node: Node) -> None:
    if not v.loops:
        v.error(node, "the break command is not placed inside a foreverypart loop")
        return
    name = node.tags.get("name")
    if name is not None and str(name.value) not in v.loops:
        v.error(node, f"the break command refers to a loop named '{name.value}' that does not enclose it")


def check_extracttext(v: Validator, node: Node) -> None:
    if v.has("foreverypart") and not v.loops:
        v.error(node, "the extracttext command is not placed inside a foreverypart loop")
    v.declare_variable(node.pos[0], str(node.pos[0].value))


def check_report(v: Validator, node: Node) -> None:
    from kinmail.sieve.report import FEEDBACK_TYPE

    for value in v.constant(node.pos[0]) or []:
        if not FEEDBACK_TYPE.match(value):
            v.error(node.pos[0], f"report command: invalid feedback type '{value}' specified")
    for value in v.constant(node.pos[2]) or []:
        if not valid_address(value):
            v.error(node.pos[2], f"report command: specified address '{value}' is invalid")


CHECKS: dict[str, Callable[[Validator, Node], None]] = {
    "report": check_report,
    "address": check_address,
    "header": check_header,
    "exists": check_exists,
    "envelope": check_envelope,
    "size": check_size,
    "fileinto": check_fileinto,
    "keep": _check_flags,
    "redirect": check_redirect,
    "set": check_set,
    "string": check_string,
    "setflag": check_flag_command,
    "addflag": check_flag_command,
    "removeflag": check_flag_command,
    "hasflag": check_hasflag,
    "body": check_matching,
    "vacation": check_vacation,
    "date": check_date,
    "currentdate": check_currentdate,
    "include": check_include,
    "global": check_global,
    "environment": check_matching,
    "duplicate": check_duplicate,
    "addheader": check_addheader,
    "deleteheader": check_deleteheader,
    "notify": check_notify,
    "notify_method_capability": check_matching,
    "metadata": check_matching,
    "servermetadata": check_matching,
    "spamtest": check_matching,
    "virustest": check_matching,
    "break": check_break,
    "foreverypart": check_foreverypart,
    "test_error": check_matching,
    "test_result_action": check_matching,
    "extracttext": check_extracttext,
}


_SPECIAL_USE = re.compile(r"^\\[A-Za-z0-9!#$&'+\-.^_`|~]+$")


def check_specialuse_exists(v: Validator, node: Node) -> None:
    for flag in v.constant(node.pos[-1]) or []:
        if not _SPECIAL_USE.match(flag):
            v.error(node.pos[-1], f"specialuse_exists test: invalid special-use flag '{flag}' specified")


def check_fileinto_specialuse(v: Validator, node: Node) -> None:
    check_fileinto(v, node)
    arg = node.tags.get("specialuse")
    if arg is not None:
        for flag in v.constant(arg) or []:
            if not _SPECIAL_USE.match(flag):
                v.error(arg, f"specialuse tag: invalid special-use flag '{flag}' specified")


def check_mailboxexists(v: Validator, node: Node) -> None:
    for folder in v.constant(node.pos[0]) or []:
        problem = mailbox_name_problem(folder)
        if problem:
            v.error(node.pos[0], f"mailboxexists test: invalid mailbox name '{folder}': {problem}")


CHECKS.update(
    {
        "specialuse_exists": check_specialuse_exists,
        "fileinto": check_fileinto_specialuse,
    }
)
