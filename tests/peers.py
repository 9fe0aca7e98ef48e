"""Private instances of Debian's Dovecot for tests and benchmarks that compare with it or check compatibility.

    with private_tmp() as tmp:
        mail = tmp / "mail"                                   # Maildirs as mail/DOMAIN/USER
        with PrivateDovecot(tmp / "dovecot", protocols=("pop3",), users={user: password}, mail=mail) as dovecot:
            poplib.POP3("127.0.0.1", dovecot.port("pop3"))

Called by the POP3 and store tests (`tests/test_pop3_*.py`, `tests/test_store_dovecot.py`) and the IMAP, POP3
and SMTP benchmarks. Everything Dovecot keeps (config, passwd file, run and state folders, log, homes) lives
under the folder given; its listeners are free 127.0.0.1 ports; nothing of the system's own mail setup is
touched. Dovecot refuses to serve mail as root, so its mail processes run as `uid` (nobody by default) and the
folders they use must be reachable by that user: `private_tmp()` gives such a folder, `give()` hands mail over.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tests.serverctl import HOST, free_port

DOVECOT_IMAP = "/usr/lib/dovecot/imap"
NOBODY = "65534"  # Dovecot will not serve mail as root
GREETINGS = {"imap": b"* OK", "pop3": b"+OK", "lmtp": b"220"}


def _chown(path: Path, user: str, group: str) -> None:
    """`shutil.chown` taking numbers written as text too."""
    os.chown(
        path,
        int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid,
        int(group) if group.isdigit() else grp.getgrnam(group).gr_gid,
    )


def give(path: Path, uid: str = NOBODY, gid: str | None = None) -> None:
    """Make `path` and everything below it belong to `uid` (Dovecot's mail processes run unprivileged)."""
    for item in [path, *path.rglob("*")]:
        _chown(item, uid, gid if gid is not None else uid)


def write_maildir(root: Path, messages: Sequence[bytes]) -> None:
    """Write `messages` into the Maildir `root` (in cur, no flags, size in the name), as another server leaves it."""
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    for i, data in enumerate(messages):
        (root / "cur" / f"{now}.M{i}P{os.getpid()}.bench,S={len(data)}:2,").write_bytes(data)


@contextlib.contextmanager
def private_tmp(prefix: str = "kinmail-peers-") -> Iterator[Path]:
    """A temporary folder Dovecot's unprivileged processes can reach (pytest's are private to root)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        root = Path(name)
        root.chmod(0o755)
        yield root


class PrivateDovecot:
    """Dovecot from a private config under `base`, serving `protocols` from the Maildirs `mail/DOMAIN/USER`.

    `users` maps addresses to plain passwords (a passwd file); without it any user is accepted with no password
    (enough for LMTP). `uid`/`gid` are the user and group its mail processes run as (a name or a number).
    `pop3_uidl_format` sets that option (with `pop3_save_uidl`); `extra` is config text appended as it is.
    """

    def __init__(
        self,
        base: Path,
        *,
        protocols: Sequence[str] = ("imap",),
        users: Mapping[str, str] | None = None,
        mail: Path | None = None,
        uid: str = NOBODY,
        gid: str | None = None,
        pop3_uidl_format: str | None = None,
        extra: str = "",
    ) -> None:
        unknown = set(protocols) - set(GREETINGS)
        if unknown:
            raise ValueError(f"unknown protocols: {sorted(unknown)}")
        self.base = base
        self.mail = mail if mail is not None else base / "mail"
        self.protocols = tuple(protocols)
        self.uid = uid
        self.gid = gid if gid is not None else uid
        self.ports = {name: free_port() for name in self.protocols}
        self.config_path = base / "dovecot.conf"
        self.log_path = base / "dovecot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config(users, pop3_uidl_format, extra)

    # --- config ------------------------------------------------------------------------------------------

    def _write_config(self, users: Mapping[str, str] | None, uidl_format: str | None, extra: str) -> None:
        base = self.base
        for sub in ("run", "state", "home"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        _chown(base / "home", self.uid, self.gid)
        if users is None:
            passdb = "  driver = static\n  args = nopassword=y\n"
        else:
            passwd = base / "passwd"
            passwd.write_text(
                "".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in users.items())
            )
            passdb = f"  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {passwd}\n"
        lines = [
            f"base_dir = {base}/run",
            f"state_dir = {base}/state",
            f"instance_name = kinmail-peer-{os.getpid()}-{min(self.ports.values(), default=0)}",
            f"log_path = {self.log_path}",
            f"protocols = {' '.join(self.protocols) or 'none'}",
            f"listen = {HOST}",
            "ssl = no",
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain",
            f"mail_location = maildir:{self.mail}/%d/%n",
            f"mail_uid = {self.uid}",
            f"mail_gid = {self.gid}",
            "first_valid_uid = 1",
            f"passdb {{\n{passdb}}}",
            "userdb {\n  driver = static\n"
            f"  args = uid={self.uid} gid={self.gid} home={base}/home/%d/%n\n}}",
            "service anvil {\n  chroot =\n}",
            "service stats {\n  chroot =\n}",
        ]
        if uidl_format is not None:
            lines += [f"pop3_uidl_format = {uidl_format}", "pop3_save_uidl = yes"]
        for name, port in self.ports.items():
            listener = f"  inet_listener {name} {{\n    address = {HOST}\n    port = {port}\n  }}\n"
            if name == "lmtp":
                lines.append(f"service lmtp {{\n{listener}}}")
            else:  # no TLS listener: the peers speak plain text on loopback only
                lines.append(
                    f"service {name}-login {{\n{listener}  inet_listener {name}s {{\n    port = 0\n  }}\n}}"
                )
        self.config_path.write_text("\n".join(lines) + "\n" + extra + "\n")

    def give(self, path: Path) -> None:
        """Make `path` and everything below it belong to this Dovecot's mail user."""
        give(path, self.uid, self.gid)

    # --- running -----------------------------------------------------------------------------------------

    def port(self, protocol: str) -> int:
        return self.ports[protocol]

    @property
    def pid(self) -> int:
        """The Dovecot master's process id (its children are the login, auth and mail processes)."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        for name, port in self.ports.items():
            while not self._greets(port, GREETINGS[name]):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"dovecot did not start ({name} on {port}): {self.log()}")
                time.sleep(0.05)

    @staticmethod
    def _greets(port: int, greeting: bytes) -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                return sock.recv(100).startswith(greeting)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def run_imap(self, user: str, script: bytes, timeout: float = 30.0) -> str:
        """Run Dovecot's imap binary pre-authenticated as `user` on a pipe (no daemon needed); its output."""
        local, _, domain = user.partition("@")
        (self.mail / domain / local).mkdir(parents=True, exist_ok=True)
        self.give(self.mail)
        result = subprocess.run(
            [DOVECOT_IMAP, "-c", str(self.config_path)],
            input=script,
            capture_output=True,
            env={"USER": user, "HOME": str(self.base / "home"), "PATH": os.environ.get("PATH", "")},
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"dovecot imap failed ({result.returncode}): {result.stderr!r} {self.log()}")
        return result.stdout.decode("utf-8", "replace")

    def __enter__(self) -> PrivateDovecot:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
