"""Inbound SMTP throughput: kinmail against Postfix delivering over LMTP to Dovecot, in the same run.

    .venv/bin/python bench/bench_smtp.py [--messages 5000] [--sizes 2048,102400] [--sessions 1,20]

For each message size and session count, Postfix's `smtp-source` sends the messages to one local mailbox
(connections reused, `-d`); the script prints accepted msg/s (until smtp-source is done), delivered msg/s (until
the last message is in the Maildir), the kinmail/Postfix ratio, and kinmail's peak RSS. Postfix (from a private
config folder, `postfix -c DIR start`) and Dovecot (`tests.peers.PrivateDovecot`, LMTP only) run on free loopback
ports with everything under a temporary folder; nothing of the system's own mail setup is touched. Needs root for
Postfix.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers import PrivateDovecot
from tests.serverctl import KinmailServer, free_port

# One mailbox per configuration, so that every run starts from an empty Maildir on both sides.
RUN_USERS = [f"load{n}@example.test" for n in range(1, 9)]

# Dovecot's LMTP may run as many delivery processes as Postfix opens connections to it.
DOVECOT_LMTP = "service lmtp {\n  process_limit = 20\n}\n"

POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/pfqueue
data_directory = {root}/pfdata
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = example.test
virtual_mailbox_maps = inline:{{ {mailboxes} }}
virtual_transport = lmtp:inet:127.0.0.1:{lmtp_port}
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file_prefixes = /var, /dev/stdout, /tmp, {root}
maillog_file = {root}/postfix.log
smtputf8_enable = no
alias_maps =
alias_database =
biff = no
lmtp_destination_concurrency_limit = 20
message_size_limit = 52428800
"""


class PostfixDovecot:
    """Private Postfix + Dovecot instances under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.smtp_port = free_port()
        self.dovecot = PrivateDovecot(
            root / "dovecot", protocols=("lmtp",), mail=root / "mail", uid="mail", extra=DOVECOT_LMTP
        )
        self.lmtp_port = self.dovecot.port("lmtp")

    def maildir(self, address: str) -> Path:
        return self.root / "mail" / "example.test" / address.split("@")[0]

    def start(self) -> None:
        root = self.root
        for sub in ("run", "mail", "pfqueue", "pfdata", "postfix"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(root / "mail", "mail", "mail")
        shutil.chown(root / "pfdata", "postfix")
        self.dovecot.start()
        conf = root / "postfix"
        mailboxes = ", ".join(f"{user}={user.split('@')[0]}/" for user in RUN_USERS)
        (conf / "main.cf").write_text(
            POSTFIX_MAIN.format(root=root, lmtp_port=self.lmtp_port, mailboxes=mailboxes)
        )
        master = Path("/etc/postfix/master.cf").read_text().splitlines()
        lines = []
        for line in master:
            fields = line.split()
            if fields and fields[0] == "smtp" and len(fields) > 1 and fields[1] == "inet":
                line = f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd"
            elif fields and not line.startswith(("#", " ", "\t")) and len(fields) >= 8 and fields[4] == "y":
                fields[4] = "n"  # no chroot: the queue lives in a private folder
                line = " ".join(fields)
            lines.append(line)
        (conf / "master.cf").write_text("\n".join(lines) + "\n")
        subprocess.run(["postfix", "-c", str(conf), "check"], check=True)
        subprocess.run(["postfix", "-c", str(conf), "start"], check=True)
        wait_port(self.smtp_port)

    def stop(self) -> None:
        subprocess.run(
            ["postfix", "-c", str(self.root / "postfix"), "stop"], check=False, capture_output=True
        )
        self.dovecot.stop()

    def rss_mb(self) -> float:
        """Resident memory of the Postfix master, the Dovecot master and all their children."""
        roots = {self.dovecot.pid} if self.dovecot.proc is not None else set()
        for pid_file in (self.root / "pfqueue" / "pid" / "master.pid",):
            try:
                roots.add(int(pid_file.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
        parents: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                status = Path(f"/proc/{entry}/status").read_text().splitlines()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status if ":" in line)
            parents[int(entry)] = int(fields.get("PPid", "0").strip())
            rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in fields else 0
        total = 0
        for pid in rss:
            cursor = pid
            while cursor > 1:
                if cursor in roots:
                    total += rss[pid]
                    break
                cursor = parents.get(cursor, 0)
        return total / 1024


def wait_port(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def count(maildir: Path) -> int:
    return sum(len(os.listdir(maildir / sub)) for sub in ("new", "cur") if (maildir / sub).is_dir())


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.1)


def run_load(
    port: int, maildir: Path, rcpt: str, messages: int, sessions: int, size: int
) -> tuple[float, float]:
    before = count(maildir)
    started = time.monotonic()
    subprocess.run(
        [
            "smtp-source",
            "-d",
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-l",
            str(size),
            "-f",
            "load@remote.example",
            "-t",
            rcpt,
            f"127.0.0.1:{port}",
        ],
        check=True,
    )
    accepted = time.monotonic() - started
    deadline = started + 1800
    while count(maildir) < before + messages and time.monotonic() < deadline:
        time.sleep(0.02)
    delivered = time.monotonic() - started
    got = count(maildir) - before
    if got < messages:
        print(f"  only {got} of {messages} delivered", flush=True)
    return messages / accepted, got / delivered


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sizes", default="2048,102400")
    parser.add_argument("--sessions", default="1,20")
    parser.add_argument("--skip-postfix", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    sessions_list = [int(s) for s in args.sessions.split(",")]
    with tempfile.TemporaryDirectory(prefix="kinmail-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # Postfix and Dovecot drop privileges and must reach their folders
        kinmail = KinmailServer(
            root / "kinmail",
            sections={"smtpd": {"pregreet_wait": 0}},
            users={user: "bench-password" for user in RUN_USERS},
            aliases=f"postmaster@example.test {RUN_USERS[0]}\n",
        )
        kinmail.config_path.write_text(
            kinmail.config_path.read_text().replace('log_level = "debug"', 'log_level = "info"')
        )
        kinmail.start()
        assert kinmail.proc is not None
        sampler = RssSampler(kinmail.proc.pid)
        sampler.start()
        postfix = None if args.skip_postfix else PostfixDovecot(root / "postfix")
        try:
            if postfix is not None:
                postfix.start()
            rows = []
            users = iter(RUN_USERS)
            for size in sizes:
                for sessions in sessions_list:
                    rcpt = next(users)
                    print(f"{size} bytes, {sessions} sessions, {args.messages} messages", flush=True)
                    k_acc, k_del = run_load(
                        kinmail.port("smtp"), kinmail.maildir(rcpt), rcpt, args.messages, sessions, size
                    )
                    print(f"  kinmail:         accepted {k_acc:7.0f}/s  delivered {k_del:7.0f}/s", flush=True)
                    p_acc = p_del = float("nan")
                    if postfix is not None:
                        p_acc, p_del = run_load(
                            postfix.smtp_port, postfix.maildir(rcpt), rcpt, args.messages, sessions, size
                        )
                        print(
                            f"  postfix+dovecot: accepted {p_acc:7.0f}/s  delivered {p_del:7.0f}/s",
                            flush=True,
                        )
                    rows.append((size, sessions, k_acc, k_del, p_acc, p_del))
            sampler.running = False
            print()
            print(
                "| size | sessions | kinmail accepted/s | kinmail delivered/s | Postfix+Dovecot accepted/s "
                "| Postfix+Dovecot delivered/s | delivered ratio |"
            )
            print("|---|---|---|---|---|---|---|")
            for size, sessions, k_acc, k_del, p_acc, p_del in rows:
                print(
                    f"| {size // 1024} KB | {sessions} | {k_acc:.0f} | {k_del:.0f} | {p_acc:.0f} | {p_del:.0f} "
                    f"| {k_del / p_del:.2f}× |"
                )
            print(f"\nkinmail peak RSS: {sampler.peak_kb / 1024:.0f} MB")
            if postfix is not None:
                print(f"Postfix + Dovecot RSS at the end (all their processes): {postfix.rss_mb():.0f} MB")
        finally:
            sampler.running = False
            kinmail.stop()
            if postfix is not None:
                postfix.stop()


if __name__ == "__main__":
    main()
