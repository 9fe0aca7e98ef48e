"""enotify (RFC 5435) with the mailto method (RFC 5436): URI checks and building the notification message.

Called by the validator (URI syntax) and by the interpreter (`notify` actions). Keeps nothing on disk.
"""

from __future__ import annotations

import datetime as dt
import email.header
import email.utils
import re
import urllib.parse

from kinmail.sieve.checks import valid_address
from kinmail.sieve.message import SieveMessage
from kinmail.sieve.result import Envelope, NotifyAction
from kinmail.sieve.strings import limit_subject

# RFC 6068 §2: characters allowed (besides %-escapes) in the to part and in header names and values
_SOME_DELIMS = "!$'()*+,;:@"
_UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_TO_CHARS = _UNRESERVED | set("!$'()*+,:@")
_Q_CHARS = _UNRESERVED | set(_SOME_DELIMS.replace(";", "")) | {"/", "?"}
_HNAME = re.compile(r"^[!-9;-~]+$")


def _check_chars(text: str, allowed: set[str], where: str) -> str:
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            if not re.match(r"%[0-9A-Fa-f]{2}", text[i : i + 3]):
                return f"invalid %-encoding in {where}"
            i += 3
            continue
        if c not in allowed:
            return f"invalid character '{c}' in {where}"
        i += 1
    return ""


def uri_problem(uri: str) -> str:
    """Why `uri` is not a notification method we can use (RFC 5436 with RFC 6068 syntax), or ""."""
    scheme, sep, rest = uri.partition(":")
    if not sep or not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*$", scheme):
        return "invalid URI"
    if scheme.lower() != "mailto":
        return f"unsupported notification method '{scheme}'"
    to, _, query = rest.partition("?")
    problem = _check_chars(to, _TO_CHARS, "'to' part")
    if problem:
        return "mailto URI: " + problem
    for field in query.split("&") if query else []:
        hname, eq, hvalue = field.partition("=")
        problem = _check_chars(hname, _Q_CHARS - {"="}, "header field name part") or _check_chars(
            hvalue, _Q_CHARS, "header field value part"
        )
        if problem:
            return "mailto URI: " + problem
        if not eq or not _HNAME.match(urllib.parse.unquote(hname)):
            return "mailto URI: invalid header field name"
    recipients, headers = parse_mailto(uri)
    for name, value in headers:
        if name.lower() in ("to", "cc", "bcc"):
            recipients.extend(a.strip() for a in value.split(",") if a.strip())
    for address in recipients:
        if not valid_address(address):
            return f"mailto URI: invalid recipient '{address}'"
    return ""


def option_problem(option: str) -> str:
    """RFC 5435 §3.2: an :options item is `name=value`."""
    if option == "":
        return "empty option specified"
    name, eq, value = option.partition("=")
    if not eq or not re.match(r"^[A-Za-z0-9][A-Za-z0-9+.\-_]*$", name):
        return f"invalid option name specified in option '{option}'"
    if any(c in value for c in "\r\n"):
        return f"invalid option value specified in option '{option}'"
    return ""


def parse_mailto(uri: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The recipients and headers of a mailto URI (RFC 6068)."""
    _scheme, _, rest = uri.partition(":")
    to, _, query = rest.partition("?")
    recipients = [a.strip() for a in urllib.parse.unquote(to).split(",") if a.strip()]
    headers = []
    for field in query.split("&") if query else []:
        name, _, value = field.partition("=")
        headers.append((urllib.parse.unquote(name), urllib.parse.unquote(value)))
    return recipients, headers


# RFC 5436 §2.3: headers of a mailto URI a notification may not take from the script
_UNSAFE_HEADERS = frozenset(
    {"from", "sender", "auto-submitted", "received", "return-path", "date", "message-id", "mime-version"}
)


def build_notification(
    message: SieveMessage,
    envelope: Envelope,
    action: NotifyAction,
    user: str,
    *,
    hostname: str,
    now: dt.datetime | None = None,
) -> tuple[list[str], bytes] | None:
    """The mailto notification (RFC 5436) as (envelope recipients, message), or None when none may be sent
    (§2.7: never for a message that was itself auto-submitted)."""
    if any(v.split(";")[0].strip().lower() != "no" for v in message.header("auto-submitted")):
        return None
    to, headers = parse_mailto(action.method)
    cc: list[str] = []
    bcc: list[str] = []
    subject = None
    body = None
    extra: list[tuple[str, str]] = []
    for name, value in headers:
        lname = name.lower()
        items = [a.strip() for a in value.split(",") if a.strip()]
        if lname == "to":
            to.extend(items)
        elif lname == "cc":
            cc.extend(items)
        elif lname == "bcc":
            bcc.extend(items)
        elif lname == "subject":
            subject = value
        elif lname == "body":
            body = value
        elif lname not in _UNSAFE_HEADERS:
            extra.append((name, value))
    seen: set[str] = set()

    def unique(items: list[str]) -> list[str]:
        out = []
        for item in items:
            if item and item.lower() not in seen:
                seen.add(item.lower())
                out.append(item)
        return out

    to, cc, bcc = unique(to), unique(cc), unique(bcc)
    recipients = to + cc + bcc
    if not recipients:
        return None
    original_from = (message.header("from") or [envelope.sender or "unknown sender"])[0]
    original_subject = (message.header("subject") or [""])[0]
    if action.message is not None:
        subject = action.message
    if subject is None:
        subject = f"[SIEVE] New mail from {original_from}: {original_subject}".strip()
    subject = limit_subject(subject)
    if body is None:
        body = f"New mail from {original_from}\r\nSubject: {original_subject}\r\n"
    now = now or dt.datetime.now(dt.UTC)
    frm = action.from_ or user
    importance, priority = {"1": ("high", "1 (Highest)"), "3": ("low", "5 (Lowest)")}.get(
        action.importance, ("normal", "3 (Normal)")
    )
    lines = [("From", frm), ("To", ", ".join(to))] if to else [("From", frm)]
    if cc:
        lines.append(("Cc", ", ".join(cc)))
    lines += [
        ("Subject", subject if subject.isascii() else email.header.Header(subject, "utf-8").encode()),
        ("Date", email.utils.format_datetime(now)),
        ("Message-ID", email.utils.make_msgid(domain=hostname)),
        ("Auto-Submitted", "auto-notified"),
        ("X-Sieve", "kinmail"),
        ("X-Priority", priority),
        ("Importance", importance),
        *extra,
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    body = body.replace("\r\n", "\n").replace("\n", "\r\n")
    data = "".join(f"{k}: {v}\r\n" for k, v in lines) + "\r\n" + body
    return recipients, data.encode("utf-8")
