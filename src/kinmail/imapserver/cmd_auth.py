"""IMAP commands of any state and of the not-authenticated state: CAPABILITY, NOOP, LOGOUT, ID (RFC 2971),
ENABLE (RFC 5161), COMPRESS (RFC 4978), STARTTLS, LOGIN, AUTHENTICATE with SASL-IR (RFC 4959).

Plaintext logins are allowed over TLS, from loopback, or always, as `[imap] plaintext_auth_without_tls` says;
otherwise LOGINDISABLED is advertised and LOGIN/AUTHENTICATE are refused with PRIVACYREQUIRED. Throttled
logins (`rt.auth.login` says so) get `NO [UNAVAILABLE]`. Keeps nothing on disk.
"""

from __future__ import annotations

from kinmail.auth import sasl
from kinmail.core.log import get_logger
from kinmail.imapserver.session import ANY, AUTH, NOAUTH, Session, State, command
from kinmail.proto.imap_args import as_astring, as_atom
from kinmail.proto.imap_parser import Command, ParseError, Str
from kinmail.proto.imap_response import Code, ImapError, Status, quoted

log = get_logger(__name__)

# Extensions that work, in the order CAPABILITY lists them.
EXTENSIONS = (
    "LITERAL+",
    "SASL-IR",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "STATUS=SIZE",
    "ESEARCH",
    "SEARCHRES",
    "CONDSTORE",
    "QRESYNC",
    "QUOTA",
    "QUOTA=RES-STORAGE",
    "MULTIAPPEND",
    "UTF8=ACCEPT",
)
# Extensions that need the message package (MIME rendering, sort keys, threads); listed only when it is present.
MESSAGE_EXTENSIONS = (
    "SORT",
    "SORT=DISPLAY",
    "THREAD=REFERENCES",
    "THREAD=ORDEREDSUBJECT",
    "BINARY",
    "CATENATE",
)
ENABLEABLE = {"IMAP4REV2", "CONDSTORE", "QRESYNC", "UTF8=ACCEPT"}


def plaintext_allowed(s: Session) -> bool:
    mode = s.rt.config.imap.plaintext_auth_without_tls
    return s.stream.tls or mode == "always" or (mode == "loopback" and s.stream.loopback)


def capability_list(s: Session) -> list[str]:
    from kinmail.imapserver import render

    caps = ["IMAP4rev1", "IMAP4rev2"]
    if s.state is State.NOT_AUTHENTICATED:
        if not s.stream.tls and s.rt.ssl_context is not None:
            caps.append("STARTTLS")
        if plaintext_allowed(s):
            caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
        else:
            caps.append("LOGINDISABLED")
    caps += EXTENSIONS
    if render.available():
        caps += MESSAGE_EXTENSIONS
    caps.append(f"APPENDLIMIT={s.rt.config.imap.max_literal_size}")
    if not s.stream.compressed:
        caps.append("COMPRESS=DEFLATE")
    return caps


@command("CAPABILITY", ANY)
async def cmd_capability(s: Session, cmd: Command) -> None:
    if cmd.args:
        raise ParseError("CAPABILITY takes no arguments")
    s.untagged("CAPABILITY " + " ".join(capability_list(s)))
    s.ok(cmd)


@command("NOOP", ANY)
async def cmd_noop(s: Session, cmd: Command) -> None:
    if s.selected is not None:
        await s.selected.refresh()
    await s.sync()
    s.ok(cmd)


@command("LOGOUT", ANY)
async def cmd_logout(s: Session, cmd: Command) -> None:
    s.untagged("BYE Logging out")
    s.ok(cmd)
    s.state = State.LOGOUT


@command("ID", ANY)
async def cmd_id(s: Session, cmd: Command) -> None:
    if len(cmd.args) != 1:
        raise ParseError("ID takes one argument")
    arg = cmd.args[0]
    if isinstance(arg, list):
        if len(arg) % 2 or len(arg) > 60:
            raise ParseError("ID list must hold field/value pairs")
        fields = {}
        for key, value in zip(arg[::2], arg[1::2], strict=True):
            if not isinstance(key, Str) or isinstance(value, list):
                raise ParseError("ID fields are strings")
            fields[key.text[:30]] = as_astring(value)[:100] if isinstance(value, Str) else None
        log.info("imap.id", cid=s.cid, client=fields.get("name"), version=fields.get("version"))
    elif as_atom(arg).upper() != "NIL":
        raise ParseError("ID takes a list or NIL")
    s.untagged('ID ("name" "kinmail" "vendor" "kinmail")')
    s.ok(cmd)


@command("ENABLE", AUTH)
async def cmd_enable(s: Session, cmd: Command) -> None:
    if not cmd.args:
        raise ParseError("ENABLE needs capabilities")
    newly = []
    for arg in cmd.args:
        name = as_atom(arg, "capability").upper()
        if name in ENABLEABLE and name not in s.enabled:
            if name in ("QRESYNC", "CONDSTORE"):
                s.enable_condstore()
            s.enabled.add(name)
            newly.append({"IMAP4REV2": "IMAP4rev2"}.get(name, name))
    if s.selected is not None and "CONDSTORE" in s.enabled:
        s.selected.condstore = True
    s.untagged("ENABLED" + "".join(" " + n for n in newly))
    s.ok(cmd)


@command("COMPRESS", AUTH)
async def cmd_compress(s: Session, cmd: Command) -> None:
    if len(cmd.args) != 1 or as_atom(cmd.args[0]).upper() != "DEFLATE":
        raise ImapError(Status.BAD, "Only DEFLATE is supported")
    if s.stream.compressed:
        raise ImapError(Status.NO, "Compression already active", "COMPRESSIONACTIVE")
    s.ok(cmd, "DEFLATE active")
    await s.stream.flush()
    s.stream.start_compress()


@command("STARTTLS", NOAUTH)
async def cmd_starttls(s: Session, cmd: Command) -> None:
    if s.stream.tls:
        raise ImapError(Status.BAD, "TLS already active")
    if s.rt.ssl_context is None:
        raise ImapError(Status.NO, "TLS not available")
    s.ok(cmd, "Begin TLS negotiation now")
    await s.stream.flush()
    await s.stream.start_tls()


async def _login(s: Session, cmd: Command, username: str, password: str) -> None:
    result = await s.rt.auth.login(username, password, remote_ip=s.stream.remote_ip, service="imap")
    if result.throttled:
        log.info("imap.login", cid=s.cid, user=username, ip=s.stream.remote_ip, status="throttled")
        raise ImapError(Status.NO, "Too many failed logins; try again later", Code.UNAVAILABLE)
    if not result.ok or result.user is None:
        log.info("imap.login", cid=s.cid, user=username, ip=s.stream.remote_ip, status="failed")
        raise ImapError(Status.NO, "Invalid credentials", Code.AUTHENTICATIONFAILED)
    await s.login_done(result.user)
    log.info("imap.login", cid=s.cid, user=result.user, ip=s.stream.remote_ip, status="ok", tls=s.stream.tls)
    s.ok(cmd, "Logged in", "CAPABILITY " + " ".join(capability_list(s)))


@command("LOGIN", NOAUTH)
async def cmd_login(s: Session, cmd: Command) -> None:
    if len(cmd.args) != 2:
        raise ParseError("LOGIN takes a user name and a password")
    if not plaintext_allowed(s):
        raise ImapError(Status.NO, "Use STARTTLS before logging in", Code.PRIVACYREQUIRED)
    await _login(s, cmd, as_astring(cmd.args[0]), as_astring(cmd.args[1]))


async def _sasl_response(s: Session, challenge: str) -> bytes:
    s.send(f"+ {challenge}\r\n".encode())
    await s.stream.flush()
    line = await s.stream.read_line()
    if line is None:
        s.state = State.LOGOUT
        raise ImapError(Status.BAD, "Connection closed")
    if line.strip() == b"*":
        raise ImapError(Status.BAD, "Authentication cancelled")
    try:
        return sasl.decode_b64(line)
    except ValueError as exc:
        raise ImapError(Status.BAD, "Invalid base64") from exc


@command("AUTHENTICATE", NOAUTH)
async def cmd_authenticate(s: Session, cmd: Command) -> None:
    if not cmd.args or len(cmd.args) > 2:
        raise ParseError("AUTHENTICATE takes a mechanism and an optional initial response")
    mech = as_atom(cmd.args[0], "mechanism").upper()
    if mech not in sasl.MECHANISMS:
        raise ImapError(Status.NO, "Unsupported mechanism")
    if not plaintext_allowed(s):
        raise ImapError(Status.NO, "Use STARTTLS before logging in", Code.PRIVACYREQUIRED)
    initial: bytes | None = None
    if len(cmd.args) == 2:
        text = as_astring(cmd.args[1])
        try:
            initial = sasl.decode_b64(text)
        except ValueError as exc:
            raise ImapError(Status.BAD, "Invalid base64") from exc
    if mech == "PLAIN":
        data = initial if initial is not None else await _sasl_response(s, "")
        try:
            authzid, authcid, password = sasl.decode_plain(data)
        except ValueError as exc:
            raise ImapError(Status.BAD, str(exc)) from exc
        if authzid and authzid.lower() != authcid.lower():
            raise ImapError(Status.NO, "Cannot act for another user", Code.AUTHENTICATIONFAILED)
        await _login(s, cmd, authcid, password)
        return
    user = initial if initial is not None else await _sasl_response(s, sasl.LOGIN_USERNAME_CHALLENGE)
    password_bytes = await _sasl_response(s, sasl.LOGIN_PASSWORD_CHALLENGE)
    try:
        await _login(s, cmd, user.decode("utf-8"), password_bytes.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ImapError(Status.BAD, "Credentials are not UTF-8") from exc


@command("NAMESPACE", AUTH)
async def cmd_namespace(s: Session, cmd: Command) -> None:
    s.untagged(b'NAMESPACE (("" ' + quoted("/") + b")) NIL NIL")
    s.ok(cmd)
