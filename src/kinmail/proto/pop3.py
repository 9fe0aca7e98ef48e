"""POP3 protocol, sans-I/O: command parsing, replies, the session state machine and message encoding.

RFC 1939 (POP3) with RFC 2449 (CAPA, extended response codes), RFC 2595 §4 (STLS), RFC 5034 (AUTH) and
RFC 3206 (the SYS and AUTH response codes). `kinmail.pop3server` feeds lines to `Pop3Session.handle` and carries
out what it asks for (check a password, lock and load the maildrop, send a message, expunge on QUIT); this module
does no I/O and keeps nothing on disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from kinmail.auth import sasl

MAX_LINE = 2048  # RFC 2449 §4 allows 255 octets for a command; AUTH initial responses need more
CRLF = b"\r\n"
TERMINATOR = b".\r\n"  # ends a multi-line response (RFC 1939 §3)


class State(StrEnum):
    """RFC 1939 §3: the states of a POP3 session."""

    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"
    CLOSED = "closed"


class Code(StrEnum):
    """Extended response codes (RFC 2449 §8, RFC 3206)."""

    IN_USE = "IN-USE"
    LOGIN_DELAY = "LOGIN-DELAY"
    SYS_TEMP = "SYS/TEMP"
    SYS_PERM = "SYS/PERM"
    AUTH = "AUTH"


@dataclass(frozen=True, slots=True)
class Reply:
    """A single-line status reply: `+OK text` or `-ERR [CODE] text`."""

    ok: bool
    text: str = ""
    code: Code | None = None

    def render(self) -> bytes:
        head = "+OK" if self.ok else "-ERR"
        parts = [head]
        if self.code is not None:
            parts.append(f"[{self.code}]")
        if self.text:
            parts.append(self.text)
        return " ".join(parts).encode("utf-8", "replace") + CRLF


# Named replies. Texts are what a user may read in a client's error dialog.
GREETING = Reply(True, "kinmail POP3 ready")
BYE = Reply(True, "bye")
BYE_UPDATED = Reply(True, "bye, deleted messages removed")
BEGIN_TLS = Reply(True, "begin TLS negotiation")
CAPA_FOLLOWS = Reply(True, "capability list follows")
NOOP_OK = Reply(True, "")
USER_OK = Reply(True, "send PASS")
DELETED = Reply(True, "message deleted")
AUTH_CONTINUE = b"+ \r\n"
ERR_UNKNOWN = Reply(False, "unknown command")
ERR_SYNTAX = Reply(False, "syntax error")
ERR_LINE_TOO_LONG = Reply(False, "line too long")
ERR_WRONG_STATE = Reply(False, "command not valid in this state")
ERR_NEED_USER = Reply(False, "send USER first")
ERR_NEED_TLS = Reply(False, "plaintext authentication is disallowed without TLS; use STLS", Code.AUTH)
ERR_AUTH_FAILED = Reply(False, "authentication failed", Code.AUTH)
ERR_THROTTLED = Reply(False, "too many failed logins, try again later", Code.SYS_TEMP)
ERR_IN_USE = Reply(False, "maildrop is locked by another POP3 session", Code.IN_USE)
ERR_MAILDROP = Reply(False, "cannot open the maildrop", Code.SYS_TEMP)
ERR_NO_SUCH_MESSAGE = Reply(False, "no such message")
ERR_ALREADY_DELETED = Reply(False, "message already deleted")
ERR_MECHANISM = Reply(False, "unsupported authentication mechanism")
ERR_AUTH_CANCELLED = Reply(False, "authentication cancelled")
ERR_BAD_BASE64 = Reply(False, "invalid base64 or PLAIN response", Code.AUTH)
ERR_TLS_ACTIVE = Reply(False, "TLS is already active")
ERR_TLS_UNAVAILABLE = Reply(False, "TLS is not available")
ERR_TOO_MANY_ERRORS = Reply(False, "too many errors, closing connection")
ERR_TIMEOUT = Reply(False, "idle for too long, closing connection")
ERR_EXPUNGE = Reply(False, "some deleted messages were not removed", Code.SYS_TEMP)
ERR_MESSAGE_GONE = Reply(False, "message was removed by another session")
ERR_INTERNAL = Reply(False, "internal error, try again later", Code.SYS_TEMP)


class Pop3Error(Exception):
    """A client mistake; carries the reply to send. The session goes on."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Command:
    """One command line: the verb upper-cased and its arguments as the client sent them."""

    name: str
    args: tuple[str, ...] = ()
    raw_arg: str = ""  # everything after the verb and one space (USER/PASS keep spaces)


_VERB = re.compile(r"[A-Za-z]{1,16}\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_command(line: bytes) -> Command:
    """Parse one line (with or without its CRLF) into a Command; raises Pop3Error."""
    if len(line) > MAX_LINE:
        raise Pop3Error(ERR_LINE_TOO_LONG)
    line = line.rstrip(b"\r\n")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise Pop3Error(ERR_SYNTAX) from None
    if _CONTROL.search(text):
        raise Pop3Error(ERR_SYNTAX)
    verb, _, rest = text.partition(" ")
    if not _VERB.match(verb):
        raise Pop3Error(ERR_UNKNOWN if verb else ERR_SYNTAX)
    return Command(verb.upper(), tuple(rest.split()), rest)


class LineBuffer:
    """Split the bytes a client sends into command lines. A line longer than MAX_LINE comes out as one
    overlong line (which `Pop3Session.handle_line` answers with an error) and the rest of it is dropped."""

    __slots__ = ("_buf", "_discarding")

    OVERLONG = b"\0" * (MAX_LINE + 1)

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received and not yet returned as lines."""
        return len(self._buf)

    def next_line(self) -> bytes | None:
        """The next complete line with its line end, or None until more bytes come."""
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > MAX_LINE:
                self._buf.clear()
                if not self._discarding:
                    self._discarding = True
                    return self.OVERLONG
            return None
        line = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        if self._discarding:
            self._discarding = False
            return self.next_line()
        return line


# --- actions the session asks the server to carry out -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes (one or more replies, or a whole multi-line response)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartTls:
    """Send `reply`, then negotiate TLS; call `Pop3Session.tls_started()` after."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Login:
    """Check the password; call `Pop3Session.login_failed` or `.login_ok` with the result."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send `+OK` then the message `uid` dot-stuffed, with only `body_lines` body lines when not None (TOP)."""

    number: int
    uid: int
    size: int
    body_lines: int | None


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT: remove `expunge_uids` (UPDATE state, RFC 1939 §6) when any, answer, close."""

    expunge_uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Close:
    """Send `reply` and close the connection."""

    reply: Reply


Action = Send | StartTls | Login | SendMessage | Quit | Close


@dataclass(frozen=True, slots=True)
class Pop3Message:
    """One message of the maildrop as the session numbers it (RFC 1939 §5: numbers start at 1)."""

    uid: int
    size: int
    uidl: str


def octets(size: int) -> bytes:
    """The first line of a RETR or TOP answer."""
    return b"+OK %d octets\r\n" % size


def uidl_for(uid: int, uidvalidity: int) -> str:
    """The unique-id listing of a message (RFC 1939 §7, UIDL): Dovecot's default `pop3_uidl_format =
    %08Xu%08Xv`, which Dovecot prints in lower-case hex, so that clients of a Maildir moved over from
    Dovecot (UIDs and UIDVALIDITY are kept) do not download everything again."""
    return f"{uid:08x}{uidvalidity:08x}"


@dataclass
class Pop3Session:
    """The state of one POP3 connection (RFC 1939 §3). `handle` returns the actions to carry out."""

    tls: bool = False
    loopback: bool = False
    tls_available: bool = False
    plaintext_policy: str = "loopback"  # "never", "loopback" or "always"
    max_errors: int = 10
    implementation: str = "kinmail"
    state: State = State.AUTHORIZATION
    errors: int = 0
    user: str | None = None
    pending_user: str | None = None
    in_auth_plain: bool = False
    messages: list[Pop3Message] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)  # message numbers
    _listings: dict[str, bytes] = field(
        default_factory=dict, init=False, repr=False
    )  # LIST / UIDL / STAT answers until DELE or RSET

    # --- entry points ---------------------------------------------------------------------------------
    def greeting(self) -> bytes:
        return GREETING.render()

    def handle_line(self, line: bytes) -> list[Action]:
        """One line from the client (with its CRLF). Returns the actions in order."""
        if line[:5] in _RETR_PREFIXES and self.state is State.TRANSACTION:
            # The hot path of a download: `RETR n` with a well-formed live message number skips the general
            # parser; anything unusual (bad number, deleted message, stray bytes) falls through to it.
            digits = line[5:].rstrip(b"\r\n")
            if digits.isdigit() and len(digits) <= 9:
                number = int(digits)
                if 0 < number <= len(self.messages) and number not in self.deleted:
                    message = self.messages[number - 1]
                    return [SendMessage(number, message.uid, message.size, None)]
        if self.in_auth_plain:
            self.in_auth_plain = False
            return self._auth_plain_response(line.rstrip(b"\r\n"))
        try:
            command = parse_command(line)
        except Pop3Error as exc:
            return self._error(exc.reply)
        handler = _HANDLERS.get(command.name)
        if handler is None:
            return self._error(ERR_UNKNOWN)
        try:
            return handler(self, command)
        except Pop3Error as exc:
            return self._error(exc.reply)

    def _error(self, reply: Reply) -> list[Action]:
        self.errors += 1
        if self.errors >= self.max_errors:
            self.state = State.CLOSED
            return [Send(reply.render()), Close(ERR_TOO_MANY_ERRORS)]
        return [Send(reply.render())]

    @property
    def plaintext_allowed(self) -> bool:
        return (
            self.tls
            or self.plaintext_policy == "always"
            or (self.plaintext_policy == "loopback" and self.loopback)
        )

    # --- results the server reports back -----------------------------------------------------------------
    def tls_started(self) -> None:
        self.tls = True

    def login_failed(self, throttled: bool) -> list[Action]:
        self.pending_user = None
        return self._error(ERR_THROTTLED if throttled else ERR_AUTH_FAILED)

    def maildrop_locked(self) -> list[Action]:
        """Login was right but another session holds the maildrop (RFC 2449 §8.1.1)."""
        self.pending_user = None
        return [Send(ERR_IN_USE.render())]

    def maildrop_failed(self) -> list[Action]:
        self.pending_user = None
        return [Send(ERR_MAILDROP.render())]

    def login_ok(self, user: str, messages: Iterable[Pop3Message]) -> list[Action]:
        """The maildrop is locked and loaded: enter the TRANSACTION state (RFC 1939 §4)."""
        self.user = user
        self.pending_user = None
        self.messages = list(messages)
        self.deleted.clear()
        self._listings.clear()
        self.state = State.TRANSACTION
        total = sum(m.size for m in self.messages)
        return [Send(Reply(True, f"{self.user} has {len(self.messages)} messages ({total} octets)").render())]

    # --- helpers ----------------------------------------------------------------------------------------
    def _require(self, state: State) -> None:
        if self.state != state:
            raise Pop3Error(ERR_WRONG_STATE)

    def _message(self, arg: str) -> tuple[int, Pop3Message]:
        if not arg.isdigit() or len(arg) > 9:
            raise Pop3Error(ERR_SYNTAX)
        number = int(arg)
        if not 1 <= number <= len(self.messages):
            raise Pop3Error(ERR_NO_SUCH_MESSAGE)
        if number in self.deleted:
            raise Pop3Error(ERR_ALREADY_DELETED)
        return number, self.messages[number - 1]

    def capabilities(self) -> list[str]:
        """RFC 2449 §6: what CAPA lists in the current state."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state == State.AUTHORIZATION:
            if self.plaintext_allowed:
                caps += ["USER", "SASL PLAIN"]
            if self.tls_available and not self.tls:
                caps.append("STLS")
        caps.append(f"IMPLEMENTATION {self.implementation}")
        return caps

    # --- commands ---------------------------------------------------------------------------------------
    def cmd_capa(self, cmd: Command) -> list[Action]:
        lines = [CAPA_FOLLOWS.render()]
        lines += [c.encode("ascii") + CRLF for c in self.capabilities()]
        lines.append(b"." + CRLF)
        return [Send(b"".join(lines))]

    def cmd_noop(self, cmd: Command) -> list[Action]:
        self._require(State.TRANSACTION)
        return [Send(NOOP_OK.render())]

    def cmd_quit(self, cmd: Command) -> list[Action]:
        if self.state == State.TRANSACTION:
            self.state = State.UPDATE
            uids = tuple(self.messages[n - 1].uid for n in sorted(self.deleted))
            return [Quit(uids)]
        self.state = State.CLOSED
        return [Quit(())]

    def cmd_stls(self, cmd: Command) -> list[Action]:
        self._require(State.AUTHORIZATION)
        if self.tls:
            raise Pop3Error(ERR_TLS_ACTIVE)
        if not self.tls_available:
            raise Pop3Error(ERR_TLS_UNAVAILABLE)
        if self.pending_user is not None:  # RFC 2595 §4: only before USER
            raise Pop3Error(ERR_WRONG_STATE)
        return [StartTls(BEGIN_TLS)]

    def cmd_user(self, cmd: Command) -> list[Action]:
        self._require(State.AUTHORIZATION)
        if not self.plaintext_allowed:
            raise Pop3Error(ERR_NEED_TLS)
        name = cmd.raw_arg.strip()
        if not name:
            raise Pop3Error(ERR_SYNTAX)
        self.pending_user = name
        return [Send(USER_OK.render())]

    def cmd_pass(self, cmd: Command) -> list[Action]:
        self._require(State.AUTHORIZATION)
        if not self.plaintext_allowed:
            raise Pop3Error(ERR_NEED_TLS)
        if self.pending_user is None:
            raise Pop3Error(ERR_NEED_USER)
        # RFC 1939 §7: the password may contain spaces; take the rest of the line as it is.
        if not cmd.raw_arg:
            raise Pop3Error(ERR_SYNTAX)
        return [Login(self.pending_user, cmd.raw_arg)]

    def cmd_auth(self, cmd: Command) -> list[Action]:
        self._require(State.AUTHORIZATION)
        if not cmd.args:  # list the mechanisms, as many servers do for clients that ask
            return [Send(Reply(True, "").render() + b"PLAIN" + CRLF + b"." + CRLF)]
        if cmd.args[0].upper() != "PLAIN" or len(cmd.args) > 2:
            raise Pop3Error(ERR_MECHANISM)
        if not self.plaintext_allowed:
            raise Pop3Error(ERR_NEED_TLS)
        if len(cmd.args) == 2:  # RFC 5034 §4: initial response
            return self._auth_plain_response(cmd.args[1].encode("ascii", "replace"))
        self.in_auth_plain = True
        return [Send(AUTH_CONTINUE)]

    def _auth_plain_response(self, response: bytes) -> list[Action]:
        if response.strip() == b"*":  # RFC 5034 §4: the client cancels
            return self._error(ERR_AUTH_CANCELLED)
        try:
            authzid, authcid, password = sasl.decode_plain(sasl.decode_b64(response))
        except ValueError:
            return self._error(ERR_BAD_BASE64)
        if authzid and authzid != authcid:
            return self._error(ERR_AUTH_FAILED)
        return [Login(authcid, password)]

    def _listing(self, kind: str) -> bytes:
        """The whole STAT, LIST or UIDL answer, built once and kept until DELE or RSET changes what is live."""
        answer = self._listings.get(kind)
        if answer is None:
            live = [(n, m) for n, m in enumerate(self.messages, 1) if n not in self.deleted]
            if kind == "STAT":
                answer = Reply(True, f"{len(live)} {sum(m.size for _, m in live)}").render()
            elif kind == "LIST":
                lines = [Reply(True, f"{len(live)} messages").render()]
                lines += [f"{n} {m.size}\r\n".encode() for n, m in live]
                answer = b"".join(lines) + TERMINATOR
            else:
                lines = [Reply(True, "").render()]
                lines += [f"{n} {m.uidl}\r\n".encode() for n, m in live]
                answer = b"".join(lines) + TERMINATOR
            self._listings[kind] = answer
        return answer

    def cmd_stat(self, cmd: Command) -> list[Action]:
        self._require(State.TRANSACTION)
        return [Send(self._listing("STAT"))]

    def cmd_list(self, cmd: Command) -> list[Action]:
        self._require(State.TRANSACTION)
        if cmd.args:
            number, message = self._message(cmd.args[0])
            return [Send(Reply(True, f"{number} {message.size}").render())]
        return [Send(self._listing("LIST"))]

    def cmd_uidl(self, cmd: Command) -> list[Action]:
        self._require(State.TRANSACTION)
        if cmd.args:
            number, message = self._message(cmd.args[0])
            return [Send(Reply(True, f"{number} {message.uidl}").render())]
        return [Send(self._listing("UIDL"))]

    def cmd_retr(self, cmd: Command) -> list[Action]:
        self._require(State.TRANSACTION)
        if len(cmd.args) != 1:
            raise Pop3Error(ERR_SYNTAX)
        number, message = self._message(cmd.args[0])
        return [SendMessage(number, message.uid, message.size, None)]

    def cmd_top(self, cmd: Command) -> list[Action]:
        self._require(State.TRANSACTION)
        if len(cmd.args) != 2 or not cmd.args[1].isdigit() or len(cmd.args[1]) > 9:
            raise Pop3Error(ERR_SYNTAX)
        number, message = self._message(cmd.args[0])
        return [SendMessage(number, message.uid, message.size, int(cmd.args[1]))]

    def cmd_dele(self, cmd: Command) -> list[Action]:
        self._require(State.TRANSACTION)
        if len(cmd.args) != 1:
            raise Pop3Error(ERR_SYNTAX)
        number, _ = self._message(cmd.args[0])
        self.deleted.add(number)
        self._listings.clear()
        return [Send(DELETED.render())]

    def cmd_rset(self, cmd: Command) -> list[Action]:
        self._require(State.TRANSACTION)
        self.deleted.clear()
        self._listings.clear()
        total = sum(m.size for m in self.messages)
        return [Send(Reply(True, f"maildrop has {len(self.messages)} messages ({total} octets)").render())]

    def message_gone(self) -> list[Action]:
        """The message asked for was expunged by another session (IMAP) since login."""
        return self._error(ERR_MESSAGE_GONE)


_RETR_PREFIXES = frozenset((b"RETR ", b"retr ", b"Retr "))

_HANDLERS = {
    "CAPA": Pop3Session.cmd_capa,
    "NOOP": Pop3Session.cmd_noop,
    "QUIT": Pop3Session.cmd_quit,
    "STLS": Pop3Session.cmd_stls,
    "USER": Pop3Session.cmd_user,
    "PASS": Pop3Session.cmd_pass,
    "AUTH": Pop3Session.cmd_auth,
    "STAT": Pop3Session.cmd_stat,
    "LIST": Pop3Session.cmd_list,
    "UIDL": Pop3Session.cmd_uidl,
    "RETR": Pop3Session.cmd_retr,
    "TOP": Pop3Session.cmd_top,
    "DELE": Pop3Session.cmd_dele,
    "RSET": Pop3Session.cmd_rset,
}


class MessageEncoder:
    """Turn a message, fed in chunks, into a POP3 multi-line body (RFC 1939 §3): every line ends in CRLF
    (bare LF and bare CR become CRLF), lines starting with "." get another ".", and the body is cut after
    `body_lines` lines following the blank line that ends the header (TOP, RFC 1939 §7).
    `finish()` ends the last line if needed and adds the terminating ".CRLF"."""

    __slots__ = ("_at_line_start", "_body_lines", "_done", "_in_body", "_pending_cr", "_prev_blank")

    def __init__(self, body_lines: int | None = None) -> None:
        self._body_lines = body_lines
        self._at_line_start = True
        self._pending_cr = False
        self._in_body = False
        self._prev_blank = False  # the line being written is empty so far
        self._done = False

    @property
    def done(self) -> bool:
        """TOP has sent all the lines it asked for: the rest of the message need not be read."""
        return self._done

    def feed(self, chunk: bytes) -> bytes:
        if self._done or not chunk:
            return b""
        if self._body_lines is None and not self._pending_cr:
            crs = chunk.count(b"\r")
            if crs == 0:
                return self._stuff(chunk.replace(b"\n", b"\r\n"))
            if crs == chunk.count(b"\r\n"):  # no bare CR: only bare LFs may need fixing
                if chunk.count(b"\n") != crs:
                    chunk = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                return self._stuff(chunk)
        return b"".join(self._lines(chunk))

    def _stuff(self, text: bytes) -> bytes:
        """Dot-stuff CRLF-only text in C-speed passes (the common case for whole messages)."""
        out = text.replace(b"\r\n.", b"\r\n..")  # returns `text` itself when there is nothing to stuff
        if self._at_line_start and text.startswith(b"."):
            out = b"." + out
        self._at_line_start = text.endswith(b"\n")
        return out

    def _lines(self, chunk: bytes) -> Iterator[bytes]:
        data = chunk
        if self._pending_cr:
            self._pending_cr = False
            if data.startswith(b"\n"):
                data = data[1:]
            # the CR already ended its line (emitted as CRLF)
        start = 0
        n = len(data)
        while start < n and not self._done:
            cr = data.find(b"\r", start)
            lf = data.find(b"\n", start)
            if cr == -1 and lf == -1:
                yield from self._emit(data[start:], ended=False)
                return
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            else:
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if data[cr + 1 : cr + 2] == b"\n" else cr + 1
                else:
                    nxt = cr + 1
                    self._pending_cr = True
            yield from self._emit(data[start:end], ended=True)
            start = nxt

    def _emit(self, part: bytes, *, ended: bool) -> Iterator[bytes]:
        if self._at_line_start:
            self._prev_blank = True
            if part.startswith(b"."):
                yield b"."
        if part:
            self._prev_blank = False
            yield part
        if not ended:
            self._at_line_start = not part and self._at_line_start
            return
        yield CRLF
        self._at_line_start = True
        if self._body_lines is None:
            return
        if self._in_body:
            self._body_lines -= 1
            if self._body_lines <= 0:
                self._done = True
        elif self._prev_blank:
            self._in_body = True
            if self._body_lines <= 0:
                self._done = True

    def finish(self) -> bytes:
        tail = b"" if self._at_line_start or self._done else CRLF
        return tail + b"." + CRLF


def encode_crlf_message(data: bytes) -> bytes:
    """The RETR body of a whole message known to have no bare LF (its size on disk equals its size with CRLF
    line ends): dot-stuffing and the terminator are all that is left to do — one pass instead of four."""
    out = data.replace(b"\r\n.", b"\r\n..")
    if out.startswith(b"."):
        out = b"." + out
    if out and not out.endswith(b"\n"):
        return b"".join((out, CRLF, TERMINATOR))
    return out + TERMINATOR


def sendable_as_is(data: bytes | bytearray) -> bool:
    """Whether a message file can go out byte for byte as a RETR body (RFC 1939 §3): every line ends in CRLF
    (no bare LF or CR), no line starts with "." and the data ends with CRLF; only ".CRLF" is then added."""
    if not data.endswith(CRLF) or data.startswith(b".") or data.find(b"\r\n.") >= 0:
        return False
    crlfs = data.count(CRLF)
    return data.count(b"\n") == crlfs and data.count(b"\r") == crlfs


def encode_retr(data: bytearray, crlf_only: bool) -> tuple[bytes | bytearray, bool]:
    """The RETR body of a whole message read into `data` (which the caller gives up), and whether the file
    could go out as it is (`sendable_as_is`). `crlf_only`: the caller knows there is no bare LF (the file is as
    long as its size with CRLF line ends, which the store counts), and line ends are not looked at: a bare CR,
    which that size does not count either, then goes out as it is. Otherwise they are checked here.
    The common cases cost one or two C-speed passes: a message that needs no stuffing is terminated in
    place, one that does is split at each "CRLF." and joined once."""
    if not crlf_only:
        crlfs = data.count(CRLF)
        if data.count(b"\n") != crlfs or data.count(b"\r") != crlfs:
            return encode_message(bytes(data)), False  # bare LF or CR: the full encoder
    if data.startswith(b"."):
        return encode_crlf_message(bytes(data)), False
    if data.find(b"\r\n.") >= 0:  # stuff: one split and one join (faster than `replace`, which counts first)
        parts = data.split(b"\r\n.")
        parts[-1] += TERMINATOR if data.endswith(CRLF) else CRLF + TERMINATOR
        return b"\r\n..".join(parts), False
    if not data.endswith(CRLF):  # the last line is not ended (or the message is empty)
        return (bytes(data) + CRLF if data else b"") + TERMINATOR, False
    data += TERMINATOR
    return data, True


def encode_message(data: bytes, body_lines: int | None = None) -> bytes:
    """The whole multi-line body for `data` (small messages; large ones go through MessageEncoder)."""
    encoder = MessageEncoder(body_lines)
    return encoder.feed(data) + encoder.finish()


def crlf_size(data: bytes) -> int:
    """The size of `data` with every line ending counted as CRLF (RFC 1939 §11: sizes as sent)."""
    bare_lf = data.count(b"\n") - data.count(b"\r\n")
    bare_cr = data.count(b"\r") - data.count(b"\r\n")
    return len(data) + bare_lf + bare_cr
