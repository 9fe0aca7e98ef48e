"""SMTP protocol pieces without I/O: replies as values, the command-line parser, paths and ESMTP parameters.

Used by `kinmail.smtpserver` (MX and submission) and by tests and fuzzing. Every reply carries an enhanced
status code (RFC 3463, RFC 2034). Paths follow RFC 5321 §4.1.2: quoted local parts, address literals, source
routes (accepted and ignored, RFC 5321 §4.1.1.3 and Appendix C), SMTPUTF8 addresses (RFC 6531 §3.3) only when
the client asked for them. The DATA decoder lives in `kinmail.proto.smtpdata`. Keeps nothing on disk.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: code, enhanced status code (RFC 3463) and text (several lines for multi-line replies)."""

    code: int
    enhanced: str
    text: str

    def render(self) -> bytes:
        """The reply as it goes on the wire (RFC 5321 §4.2.1: "code-" on every line but the last)."""
        lines = self.text.split("\n") if self.text else [""]
        prefix = f"{self.enhanced} " if self.enhanced else ""
        last = len(lines) - 1
        out = [f"{self.code}{' ' if i == last else '-'}{prefix}{line}\r\n" for i, line in enumerate(lines)]
        return "".join(out).encode("utf-8", "surrogateescape")

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.enhanced, text)

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}".replace("\n", " / ")


class ProtocolError(Exception):
    """An error a client caused; it carries the reply to send. `fatal` closes the connection after it."""

    def __init__(self, reply: Reply, *, fatal: bool = False) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.fatal = fatal


# --- named replies (RFC 5321 §4.2.2 codes, RFC 3463 enhanced codes) ---------------------------------------
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
RESET_OK = Reply(250, "2.0.0", "Ok")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
BYE = Reply(221, "2.0.0", "Bye")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
VRFY_CANNOT = Reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(214, "2.0.0", "See RFC 5321")

SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, closing transmission channel")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
PREGREET = Reply(421, "4.7.0", "Talking before the greeting, closing connection")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
TEMP_AUTH_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
RATE_LIMITED = Reply(450, "4.7.1", "Too many messages, try again later")

SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long")
PARAM_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_PATH = Reply(501, "5.1.7", "Bad address syntax")
BAD_RCPT_PATH = Reply(501, "5.1.3", "Bad recipient address syntax")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
VRFY_DISABLED = Reply(502, "5.5.1", "VRFY command is disabled")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NEED_HELO = Reply(503, "5.5.1", "Send HELO/EHLO first")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
ALREADY_AUTH = Reply(503, "5.5.1", "Already authenticated")
NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command")
UNKNOWN_PARAM = Reply(555, "5.5.4", "Unsupported parameter")
BAD_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
NO_SUCH_USER = Reply(550, "5.1.1", "Recipient address rejected: User unknown")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
ACCESS_DENIED = Reply(554, "5.7.1", "Access denied")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address rejected: not owned by user")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
BARE_LINE_ENDING = Reply(
    554, "5.6.11", "Message contains bare CR or LF; only CRLF ends a line (RFC 5321 §2.3.8)"
)
NEED_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")
TRANSACTION_FAILED = Reply(554, "5.0.0", "Transaction failed")
BAD_HEADER = Reply(554, "5.6.0", "Message headers are malformed")


# --- commands -----------------------------------------------------------------------------------------------
VERBS = frozenset(
    {
        "HELO",
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "BDAT",
        "RSET",
        "NOOP",
        "QUIT",
        "VRFY",
        "EXPN",
        "HELP",
        "STARTTLS",
        "AUTH",
    }
)


@dataclass(frozen=True, slots=True)
class Command:
    """A command line split into its verb (upper case) and the rest (without the CRLF)."""

    verb: str
    arg: str


def parse_command(line: bytes) -> Command:
    """Split one command line (with or without CRLF); raises ProtocolError for junk and bare line ends."""
    if line.endswith(b"\r\n"):
        line = line[:-2]
    if b"\r" in line or b"\n" in line or b"\0" in line:
        raise ProtocolError(SYNTAX_ERROR.with_text("Bare CR, LF or NUL in command"))
    text = line.decode("utf-8", "surrogateescape")
    verb, _, arg = text.partition(" ")
    verb = verb.upper()
    if verb not in VERBS:
        raise ProtocolError(SYNTAX_ERROR)
    return Command(verb, arg.strip(" "))


# --- paths --------------------------------------------------------------------------------------------------
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_PARAM_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A parsed mailbox: `local` without quotes, `domain` as written (address literals keep their brackets)."""

    local: str
    domain: str

    @property
    def address(self) -> str:
        """The mailbox as text, the local part quoted only when it has to be (RFC 5321 §4.1.2)."""
        local = self.local
        if not _DOT_STRING.match(local) and not (local and _utf8_dot_string(local)):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain.lower()}"

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")


@dataclass(frozen=True, slots=True)
class Path:
    """A reverse- or forward-path with its ESMTP parameters (keys upper case). `mailbox` is None for <>."""

    mailbox: Mailbox | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.mailbox.address if self.mailbox else ""


def _utf8_dot_string(local: str) -> bool:
    # RFC 6531 §3.3: atext extended by UTF-8 non-ASCII.
    return all(
        _DOT_STRING.match(part)
        or (
            part
            and not part.isascii()
            and part.isprintable()
            and not any(c in part for c in ' "(),:;<>@[\\]')
        )
        for part in local.split(".")
    )


def _parse_domain(text: str, *, smtputf8: bool) -> str:
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError("bad address literal")
        inner = text[1:-1]
        try:
            if inner.lower().startswith("ipv6:"):
                ipaddress.IPv6Address(inner[5:])
            else:
                ipaddress.IPv4Address(inner)
        except ValueError:
            raise ValueError("bad address literal") from None
        return text
    if not text or len(text) > MAX_DOMAIN:
        raise ValueError("bad domain")
    labels = text.split(".")
    for label in labels:
        if _LABEL.match(label):
            continue
        if smtputf8 and label and not label.isascii():
            try:
                label.encode("idna")
            except UnicodeError:
                raise ValueError("bad domain") from None
            continue
        raise ValueError("bad domain")
    return text


def _parse_mailbox(text: str, *, smtputf8: bool) -> Mailbox:
    if text.startswith('"'):
        # Quoted-string local part (RFC 5321 §4.1.2): find the closing quote, honouring backslash pairs.
        i, chars = 1, []
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                chars.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                break
            if not c.isprintable() and c != " ":
                raise ValueError("bad quoted local part")
            chars.append(c)
            i += 1
        else:
            raise ValueError("unterminated quoted local part")
        rest = text[i + 1 :]
        if not rest.startswith("@"):
            raise ValueError("missing domain")
        local, domain = "".join(chars), rest[1:]
    else:
        local, at, domain = text.rpartition("@")
        if not at:
            raise ValueError("missing domain")
        if not (_DOT_STRING.match(local) or (smtputf8 and _utf8_dot_string(local))):
            raise ValueError("bad local part")
    if not local or len(local.encode("utf-8", "surrogateescape")) > MAX_LOCAL_PART:
        raise ValueError("bad local part length")
    return Mailbox(local, _parse_domain(domain, smtputf8=smtputf8))


def parse_params(text: str) -> dict[str, str | None]:
    """ESMTP parameters "KEY=VALUE KEY" (RFC 5321 §4.1.2 Mail-parameters); keys upper-cased."""
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _PARAM_KEY.match(key) or (eq and not value):
            raise ProtocolError(PARAM_SYNTAX)
        params[key.upper()] = value if eq else None
    return params


def parse_path(arg: str, keyword: str, *, strict: bool = True, forward: bool = False) -> Path:
    """Parse `FROM:<path> params` (keyword "FROM") or `TO:<path> params` ("TO").

    Raises ProtocolError with 501 for bad syntax and 553 5.6.7 for a UTF-8 address without SMTPUTF8.
    `forward=True` refuses the null path (only postmaster without a domain is allowed bare, RFC 5321 §4.1.1.3).
    """
    bad = BAD_RCPT_PATH if forward else BAD_PATH
    head, colon, rest = arg.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise ProtocolError(
            PARAM_SYNTAX.with_text(f"Syntax: {'RCPT TO' if forward else 'MAIL FROM'}:<address>")
        )
    rest = rest.strip(" ")
    if rest.startswith("<"):
        end = _closing_bracket(rest)
        if end < 0:
            raise ProtocolError(bad)
        inner, tail = rest[1:end], rest[end + 1 :]
        if tail and not tail.startswith(" "):
            raise ProtocolError(bad.with_text("Junk after address"))
    elif strict:
        raise ProtocolError(bad.with_text("Address must be in <>"))
    else:
        inner, _, tail = rest.partition(" ")
    params = parse_params(tail)
    smtputf8 = "SMTPUTF8" in params or forward
    if not inner:
        if forward:
            raise ProtocolError(bad)
        return Path(None, params)
    if len(inner) > MAX_PATH:
        raise ProtocolError(bad.with_text("Address too long"))
    if inner.startswith("@"):
        # A source route "@a,@b:mailbox": RFC 5321 §4.1.1.3 says to accept and ignore it.
        route, colon2, mailbox_text = inner.partition(":")
        if not colon2 or not all(part.startswith("@") and len(part) > 1 for part in route.split(",")):
            raise ProtocolError(bad)
        inner = mailbox_text
    if forward and inner.lower() == "postmaster":
        return Path(Mailbox("postmaster", ""), params)
    if not inner.isascii() and "SMTPUTF8" not in params and not forward:
        raise ProtocolError(NEED_SMTPUTF8)
    try:
        mailbox = _parse_mailbox(inner, smtputf8=smtputf8)
    except ValueError as exc:
        raise ProtocolError(bad.with_text(f"Bad address syntax: {exc}")) from None
    return Path(mailbox, params)


def _closing_bracket(text: str) -> int:
    in_quote = False
    i = 1
    while i < len(text):
        c = text[i]
        if in_quote and c == "\\":
            i += 2
            continue
        if c == '"':
            in_quote = not in_quote
        elif c == ">" and not in_quote:
            return i
        i += 1
    return -1


def parse_helo_domain(arg: str) -> str:
    """The domain or address literal after HELO/EHLO; raises ProtocolError 501 when missing or malformed."""
    name = arg.strip()
    if not name or " " in name or len(name) > MAX_DOMAIN:
        raise ProtocolError(PARAM_SYNTAX.with_text("Syntax: EHLO hostname"))
    if name.startswith("["):
        try:
            _parse_domain(name, smtputf8=False)
        except ValueError:
            raise ProtocolError(PARAM_SYNTAX.with_text("Bad address literal")) from None
    elif not all(c.isprintable() and c not in '<>@\\"' for c in name):
        raise ProtocolError(PARAM_SYNTAX.with_text("Bad HELO name"))
    return name


def xtext_decode(value: str) -> str:
    """Decode RFC 3461 §4 xtext ("+HH" escapes), used by ENVID and ORCPT; raises ValueError."""
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "+":
            hexpart = value[i + 1 : i + 3]
            if len(hexpart) != 2 or not all(h in "0123456789ABCDEF" for h in hexpart):
                raise ValueError("bad xtext")
            out.append(chr(int(hexpart, 16)))
            i += 3
        else:
            if not (33 <= ord(c) <= 126) or c == "=":
                raise ValueError("bad xtext")
            out.append(c)
            i += 1
    return "".join(out)


def xtext_encode(value: str) -> str:
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in value)


def ehlo_reply(hostname: str, greeting: str, keywords: list[str]) -> Reply:
    """The multi-line EHLO answer: our name and greeting, then one extension per line (RFC 5321 §4.1.1.1)."""
    return Reply(250, "", "\n".join([f"{hostname} {greeting}", *keywords]))
