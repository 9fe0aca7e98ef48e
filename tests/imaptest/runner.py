"""Runs one imaptest script against a server over plain sockets (see tests/test_imap_imaptest.py).

`ScriptRun(script, host, port, users).run()` logs each connection in, brings the test mailbox to the
script's `state:` (deleting `$mailbox*` first, creating it, appending from the script's mbox or
default.mbox, selecting it), then sends each command group and matches the replies as imaptest does. A
mismatch raises `ScriptFailure` naming the command, what was expected, the variables and the last lines of
the conversation. Keeps nothing on disk.
"""

from __future__ import annotations

import re
import socket
import time

from tests.imaptest.match import Matcher, add_default_directives
from tests.imaptest.script import Group, Script, ScriptFailure, TestCommand, Tok, read_mbox, render, tokenize

__all__ = ["Conn", "ScriptFailure", "ScriptRun"]


class Conn:
    def __init__(self, host: str, port: int, index: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = b""
        self.index = index
        self.exists = 0
        self.next_tag = 1
        self.capabilities: set[str] = set()
        self.banner = self.read_response()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ScriptFailure(f"connection {self.index + 1}: server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def read_response(self) -> str:
        """One whole response line with its literals, as text (latin-1 keeps bytes 1:1)."""
        data = b""
        while True:
            line = self._line()
            data += line
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                return data.decode("latin-1")[:-2]
            size = int(m.group(1))
            while len(self.buf) < size:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ScriptFailure("server closed the connection inside a literal")
                self.buf += chunk
            data += self.buf[:size]
            self.buf = self.buf[size:]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, text: str) -> tuple[list[str], str]:
        """Send one setup command, return (untagged lines, tagged line)."""
        tag = f"i{self.next_tag}"
        self.next_tag += 1
        self.send(tag.encode() + b" " + text.encode("latin-1") + b"\r\n")
        untagged = []
        while True:
            line = self.read_response()
            if line.startswith(tag + " "):
                return untagged, line[len(tag) + 1 :]
            self.track(line)
            untagged.append(line)

    def track(self, line: str) -> None:
        m = re.match(r"\* (\d+) (EXISTS|EXPUNGE)\b", line, re.I)
        if m:
            if m.group(2).upper() == "EXISTS":
                self.exists = int(m.group(1))
            else:
                self.exists -= 1
        m = re.search(r"\[CAPABILITY ([^\]]*)\]|^\* CAPABILITY (.*)$", line, re.I)
        if m:
            self.capabilities = {c.upper() for c in (m.group(1) or m.group(2)).split()}


class ScriptRun:
    """Runs one script against a server; `users` gives a login (address, password) per connection."""

    def __init__(
        self, script: Script, host: str, port: int, users: list[tuple[str, str]], mailbox: str = "imaptest"
    ) -> None:
        self.script = script
        self.host, self.port = host, port
        self.users = users
        self.mailbox = mailbox
        self.conns: list[Conn] = []
        self.variables: dict[str, str] = {}
        self.matcher = Matcher(self.variables)
        self.source = read_mbox(script.mbox)
        self.source_pos = 0
        self.skipped = False
        self.transcript: list[str] = []

    # --- setup -----------------------------------------------------------------------------------------
    def login_for(self, index: int) -> tuple[str, str]:
        """The first user, or the second for connections the header gives `$user2`."""
        wanted = self.script.users.get(index, "")
        if wanted in ("$user2", "${user2}") and len(self.users) > 1:
            return self.users[1]
        return self.users[0]

    def next_message(self) -> tuple[bytes, str | None]:
        msg = self.source[self.source_pos % len(self.source)]
        self.source_pos += 1
        return msg

    def setup(self) -> None:
        s = self.script
        for i in range(s.connections):
            user, password = self.login_for(i)
            suffix = "" if i == 0 else str(i + 1)
            self.variables["user" + suffix] = user
            self.variables["username" + suffix] = user.split("@")[0]
            self.variables["domain" + suffix] = user.split("@")[1] if "@" in user else self.host
            self.variables["password" + suffix] = password
            self.conns.append(Conn(self.host, self.port, i))
        self.variables["mailbox"] = self.mailbox
        self.variables["mailbox_url"] = self.mailbox
        if s.state == "nonauth":
            caps = self.conns[0].capabilities
            if not caps:
                self.conns[0].command("CAPABILITY")
            if not self._have_caps(self.conns[0].capabilities):
                self.skipped = True
            return
        for i, conn in enumerate(self.conns):
            user, password = self.login_for(i)
            _, tagged = conn.command(f'LOGIN "{user}" "{password}"')
            if not tagged.upper().startswith("OK"):
                raise ScriptFailure(f"setup: LOGIN failed: {tagged}")
        first = self.conns[0]
        first.command("CAPABILITY")
        if not self._have_caps(first.capabilities):
            self.skipped = True
            return
        untagged, _ = first.command(f'LIST "" "{self.mailbox}*"')
        boxes = [render(tokenize(u[2:])[3:4]).strip('"') for u in untagged if u.upper().startswith("* LIST")]
        for box in sorted(boxes, key=str.lower, reverse=True):
            first.command(f'DELETE "{box}"')
        untagged, _ = first.command(f'LSUB "" "{self.mailbox}*"')
        for u in untagged:
            if u.upper().startswith("* LSUB"):
                first.command(f"UNSUBSCRIBE {render(tokenize(u[2:])[3:4])}")
        if s.state == "auth":
            return
        if self.mailbox.upper() != "INBOX":
            _, tagged = first.command(f'CREATE "{self.mailbox}"')
            if not tagged.upper().startswith("OK"):
                raise ScriptFailure(f"setup: CREATE failed: {tagged}")
        if s.state == "created":
            return
        count = len(self.source) if s.messages is None else s.messages
        for _ in range(count):
            data, date = self.next_message()
            self.append(first, self.mailbox, "", date, data)
        if s.state == "appended":
            return
        for conn in self.conns:
            _, tagged = conn.command(f'SELECT "{self.mailbox}"')
            if not tagged.upper().startswith("OK"):
                raise ScriptFailure(f"setup: SELECT failed: {tagged}")

    def _have_caps(self, caps: set[str]) -> bool:
        return all(c.upper() in caps for c in self.script.capabilities)

    def append(self, conn: Conn, mailbox: str, flags: str, date: str | None, data: bytes) -> None:
        parts = f'APPEND "{mailbox}"' + (f" {flags}" if flags else "") + (f' "{date}"' if date else "")
        _, tagged = conn.command(parts + " {" + str(len(data)) + "+}\r\n" + data.decode("latin-1"))
        if not tagged.upper().startswith("OK"):
            raise ScriptFailure(f"setup: APPEND failed: {tagged}")

    # --- commands ----------------------------------------------------------------------------------------
    def _wire(self, conn: Conn, text: str, tag: str) -> bytes:
        """The bytes of one script command: non-synchronising literals, APPEND bodies from the mbox."""
        low = text.lower()
        if low == "append" or (low.startswith("append ") and not self._append_has_body(text[7:])):
            args = text[7:] if low.startswith("append ") else ""
            data, date = self.next_message()
            if not args.strip():
                args = f'"{self.mailbox}"'
                if date:
                    args += f' "{date}"'
            text = args
            head = f"{tag} APPEND {text} {{{len(data)}+}}\r\n".encode("latin-1")
            return head + data + b"\r\n"
        wire = text.encode("latin-1")
        wire = re.sub(rb"(~?\{\d+)\}\r\n", rb"\1+}\r\n", wire)
        return tag.encode() + b" " + wire + b"\r\n"

    @staticmethod
    def _append_has_body(args: str) -> bool:
        toks = tokenize(args)
        if len(toks) < 2:
            return False
        k = 1
        if isinstance(toks[k], list):
            k += 1
        if k < len(toks) and isinstance(toks[k], Tok) and toks[k].kind == "string":
            k += 1
        if k >= len(toks):
            return False
        t = toks[k]
        return isinstance(t, Tok) and (t.kind == "literal" or t.text.lower() == "catenate")

    def run_group(self, index: int, group: Group) -> None:
        conn = self.conns[group.conn]
        m = self.matcher
        m.seqmap = list(range(1, conn.exists + 1))
        found = [False] * len(group.untagged)
        best: dict[int, str] = {}
        received: list[str] = []
        tags: dict[str, TestCommand] = {}
        for cmd in group.commands:
            tag = f"{conn.index + 1}.{conn.next_tag}"
            conn.next_tag += 1
            text = m.expand_command(cmd.text)
            tags[tag] = cmd
            self.transcript.append(f"C{conn.index + 1}: {tag} {text[:300]}")
            conn.send(self._wire(conn, text, tag))
        first_tag = next(iter(tags))
        extra: list[str] = []
        pending = dict(tags)
        while pending:
            line = conn.read_response()
            self.transcript.append(f"S{conn.index + 1}: {line[:300]}")
            head, _, rest = line.partition(" ")
            if head in pending:
                cmd = pending.pop(head)
                expected = cmd.reply or []
                actual = tokenize(rest)
                self.variables["tag"] = head
                m.added = []
                ok = True
                if expected and isinstance(expected[0], Tok) and expected[0].text == "":
                    ok = True
                elif not m.match_args(expected, actual, prefix=True):
                    ok = False
                self.variables.pop("tag", None)
                if not ok:
                    self.fail(index, group, f"expected tagged reply '{render(expected)}', got '{rest}'")
                continue
            if head == "+":
                continue
            if head != "*":
                self.fail(index, group, f"reply with unknown tag: {line}")
            received.append(line)
            args = tokenize(rest)
            any_found = False
            for i, ut in enumerate(group.untagged):
                if found[i]:
                    continue
                self.variables["tag"] = first_tag
                m.added = []
                saved = dict(self.variables)
                prefix = (
                    bool(args)
                    and isinstance(args[0], Tok)
                    and args[0].text.upper() in ("OK", "NO", "BAD", "BYE")
                )
                ok = m.match_args(add_default_directives(ut.args), args, prefix=prefix)
                self.variables.pop("tag", None)
                if ok:
                    if ut.existence == "!":
                        self.fail(
                            index, group, f"unexpected untagged reply matched '! {render(ut.args)}': {line}"
                        )
                    found[i] = True
                    any_found = True
                    if group.ordered:
                        break
                    continue
                self.variables.clear()
                self.variables.update({k: v for k, v in saved.items() if k != "tag"})
                for name in m.added:
                    self.variables.pop(name, None)
                best.setdefault(i, line)
                if group.ordered and ut.existence == "*":
                    break
            if not any_found:
                extra.append(line)
            conn.track(line)
            mm = re.match(r"\* (\d+) EXPUNGE", line, re.I)
            if mm:
                m.handle_expunge(int(mm.group(1)))
        missing = [ut for i, ut in enumerate(group.untagged) if ut.existence == "*" and not found[i]]
        if missing:
            lines = "\n".join(f"  expected: {ut.line}" for ut in missing)
            self.fail(
                index,
                group,
                f"missing {len(missing)} untagged replies:\n{lines}\n  received:\n"
                + "\n".join("    " + r[:400] for r in received),
            )
        if not self.script.ignore_extra_untagged and extra and group.untagged:
            self.fail(index, group, f"{len(extra)} unexpected untagged replies, first: {extra[0]}")

    def fail(self, index: int, group: Group, message: str) -> None:
        first = group.commands[0] if group.commands else TestCommand("(banner)", None)
        variables = ", ".join(
            f"${k}={v}" for k, v in sorted(self.variables.items()) if k not in ("password",)
        )
        tail = "\n".join(self.transcript[-40:])
        raise ScriptFailure(
            f"{self.script.name}: command group {index + 1} (line {first.linenum}): {first.text[:200]}\n"
            f"{message}\nvariables: {variables}\nlast lines of the conversation:\n{tail}"
        )

    def run(self) -> bool:
        """Run the script; False when it was skipped for missing capabilities."""
        try:
            self.setup()
            if self.skipped:
                return False
            for index, group in enumerate(self.script.groups):
                if not group.commands:
                    continue
                self.run_group(index, group)
            return True
        finally:
            for conn in self.conns:
                conn.close()
            time.sleep(0)
