"""IMAP load generator: kinmail against Dovecot's imapd, side by side in one run.

    .venv/bin/python bench/bench_imap.py [--clients 10,50] [--seconds 5] [--runs 3] [--messages 300]
                                        [--idle 1000] [--big 100000] [--skip-dovecot]

Profiles, each run with N concurrent asyncio clients for `--seconds` against both servers:
  login   connect, LOGIN, LOGOUT, disconnect (ops = logins)
  mix     one session per client: SELECT, FETCH of random fields, FETCH BODY.PEEK[], STORE, APPEND, EXPUNGE
  fetch   one session per client: FETCH of random fields or of a whole message
  append  one session per client: APPEND of a 2 KB message
Each profile runs `--runs` times per server, the servers taking turns; the median is printed, with kinmail's
CPU per operation (all its threads, and its event-loop thread alone): steadier than ops/s on a busy machine.
Before each run the script waits until kinmail has finished the background work the runs before left (full-text
indexing of appended messages and the like), so that it slows neither server's next run, and prints the CPU
that work took per profile.
Every client has its own user with its own copy of the same mailbox (`--messages` messages), so sessions do
not wait on each other's locks; Dovecot serves a copy of the same Maildir files from a private config on
other loopback ports (its default login process per connection). Then, for kinmail only: `--idle`
connections held in IDLE and the server's RSS, SELECT of a `--big` message mailbox, and SEARCH TEXT over it.
Prints tables; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.peers import PrivateDovecot, give, write_maildir
from tests.serverctl import KinmailServer

PASSWORD = "bench-secret-1"
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "mail",
    "server",
    "group",
    "family",
    "club",
    "message",
    "filter",
    "folder",
    "sieve",
    "quota",
    "budget",
]
FIELDS = ["FLAGS", "UID", "RFC822.SIZE", "INTERNALDATE", "ENVELOPE", "BODYSTRUCTURE", "BODY.PEEK[HEADER]"]


def make_message(rng: random.Random, i: int, size: int | None = None) -> bytes:
    head = [
        f"From: Sender {i} <sender{i}@example.net>",
        f"To: user{i % 7}@example.test",
        f"Subject: benchmark message {i} {rng.choice(WORDS)}",
        f"Message-ID: <bench{i}.{rng.random()}@example.net>",
        "Date: Wed, 25 Nov 2026 12:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
    ]
    target = size if size is not None else int(rng.lognormvariate(8.0, 0.8))
    body: list[str] = []
    total = 0
    while total < target:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        body.append(line)
        total += len(line) + 2
    return ("\r\n".join(head + body) + "\r\n").encode()


class Client:
    """A small IMAP client: one command at a time, literals read whole."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.n = 0

    async def connect(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
        await self.reader.readline()

    async def cmd(self, text: str, literal: bytes | None = None) -> list[bytes]:
        self.n += 1
        tag = b"t%d" % self.n
        data = tag + b" " + text.encode()
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.writer.write(data + b"\r\n")
        lines: list[bytes] = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            while line.endswith(b"}\r\n") and b"{" in line:
                size = int(line[line.rindex(b"{") + 1 : -3])
                line += await self.reader.readexactly(size) + await self.reader.readline()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text[:40]}: {line[:200]!r}")
                return lines
            lines.append(line)

    async def login(self, port: int, user: str) -> None:
        await self.connect(port)
        await self.cmd(f'LOGIN "{user}" "{PASSWORD}"')

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def exists_of(lines: list[bytes]) -> int:
    for line in lines:
        if line.endswith(b" EXISTS\r\n"):
            return int(line.split()[1])
    return 0


async def profile_login(port: int, user: str, until: float, rng: random.Random) -> int:
    ops = 0
    while time.monotonic() < until:
        c = Client()
        await c.login(port, user)
        await c.cmd("LOGOUT")
        await c.close()
        ops += 1
    return ops


async def profile_session(kind: str, port: int, user: str, until: float, rng: random.Random) -> int:
    c = Client()
    await c.login(port, user)
    count = exists_of(await c.cmd("SELECT INBOX"))
    small = make_message(rng, 0, 2000)
    ops = 0
    while time.monotonic() < until:
        if kind == "append":
            await c.cmd("APPEND INBOX", small)
        elif kind == "fetch":
            if rng.random() < 0.5:
                start = rng.randint(1, max(1, count - 10))
                await c.cmd(f"FETCH {start}:{min(start + 9, count)} ({' '.join(rng.sample(FIELDS, 3))})")
            else:
                await c.cmd(f"FETCH {rng.randint(1, count)} BODY.PEEK[]")
        else:
            r = rng.random()
            if count == 0 and r >= 0.10:  # an empty folder (a small --messages): append instead
                r = 0.85
            if r < 0.10:
                count = exists_of(await c.cmd("SELECT INBOX"))
            elif r < 0.40:
                start = rng.randint(1, max(1, count - 10))
                await c.cmd(f"FETCH {start}:{min(start + 9, count)} ({' '.join(rng.sample(FIELDS, 3))})")
            elif r < 0.65:
                await c.cmd(f"FETCH {rng.randint(1, count)} BODY.PEEK[]")
            elif r < 0.80:
                flag = rng.choice(["\\Seen", "\\Flagged", "\\Answered"])
                await c.cmd(f"STORE {rng.randint(1, count)} {rng.choice('+-')}FLAGS.SILENT ({flag})")
            elif r < 0.90:
                await c.cmd("APPEND INBOX", small)
                count = exists_of(await c.cmd("NOOP")) or count + 1
            else:
                await c.cmd(f"STORE {count} +FLAGS.SILENT (\\Deleted)")
                lines = await c.cmd("EXPUNGE")
                count -= sum(1 for line in lines if line.endswith(b" EXPUNGE\r\n"))
        ops += 1
    await c.cmd("LOGOUT")
    await c.close()
    return ops


async def run_profile(kind: str, port: int, users: list[str], seconds: float) -> tuple[float, int]:
    """Operations per second, and the number of operations."""
    until = time.monotonic() + seconds
    started = time.monotonic()

    def one(i: int, user: str) -> Awaitable[int]:
        rng = random.Random(i)
        if kind == "login":
            return profile_login(port, user, until, rng)
        return profile_session(kind, port, user, until, rng)

    results = await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
    return sum(results) / (time.monotonic() - started), sum(results)


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User and system CPU of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, limit: float = 180.0) -> tuple[float, float]:
    """Wait until kinmail has done the background work a profile left (full-text indexing of the messages it
    appended, deleting the full-text rows of expunged ones, WAL checkpoints): two seconds in a row with almost no
    CPU. Returns the seconds waited and the CPU seconds used meanwhile."""
    started, cpu0 = time.monotonic(), cpu_seconds(pid)
    last, calm = cpu0, 0
    while calm < 2 and time.monotonic() - started < limit:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        calm = calm + 1 if now - last < 0.03 else 0
        last = now
    return time.monotonic() - started - 2.0, cpu_seconds(pid) - cpu0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def idle_connections(port: int, users: list[str], count: int, pid: int) -> tuple[float, float]:
    before = rss_mb(pid)
    clients: list[Client] = []
    for i in range(count):
        c = Client()
        await c.login(port, users[i % len(users)])
        await c.cmd("SELECT INBOX")
        c.writer.write(b"idle IDLE\r\n")
        await c.reader.readline()
        clients.append(c)
    await asyncio.sleep(2)
    after = rss_mb(pid)
    for c in clients:
        c.writer.close()
    return before, after


async def timed(c: Client, text: str, rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        await c.cmd(text)
        times.append((time.perf_counter() - t) * 1000)
    return times[0], statistics.median(times[1:] if len(times) > 1 else times)


async def big_mailbox(port: int, user: str) -> None:
    c = Client()
    await c.login(port, user)
    cold, _ = await timed(c, "SELECT INBOX", 1)
    _, warm = await timed(c, "SELECT INBOX", 6)
    print(f"SELECT of the big mailbox: first {cold:.0f} ms (index built), then {warm:.1f} ms (median of 5)")
    first, again = await timed(c, "SEARCH TEXT budget", 4)
    print(
        f"SEARCH TEXT over it: first {first:.0f} ms (full-text index filled), then {again:.0f} ms (median of 3)"
    )
    first, again = await timed(c, "SEARCH TEXT sender77777", 3)
    print(f"SEARCH TEXT, rare word: {again:.0f} ms")
    await c.cmd("LOGOUT")
    await c.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,50")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--big", type=int, default=100000)
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per profile and server; the median is shown"
    )
    parser.add_argument("--skip-dovecot", action="store_true")
    parser.add_argument("--profiles", default="login,mix,fetch,append")
    args = parser.parse_args()
    client_counts = [int(x) for x in args.clients.split(",")]
    users = [f"bench{i}@example.test" for i in range(max(client_counts))]
    rng = random.Random(1)
    messages = [make_message(rng, i) for i in range(args.messages)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-imap-"))
    tmp.chmod(0o755)  # Dovecot's auth and mail processes run as other users
    dovecot: PrivateDovecot | None = None
    big_user = "big@example.test"
    srv = KinmailServer(
        tmp / "kinmail", users={u: PASSWORD for u in [*users, big_user]}, aliases="", services=("imap",)
    )
    try:
        print(f"writing {len(users)} mailboxes of {args.messages} messages ...", flush=True)
        for u in users:
            write_maildir(srv.maildir(u), messages)
        if args.big:
            print(f"writing a mailbox of {args.big} messages ...", flush=True)
            big_rng = random.Random(2)
            write_maildir(srv.maildir(big_user), [make_message(big_rng, i, 400) for i in range(args.big)])
        # as a server runs in production: no per-command debug lines
        srv.config_path.write_text(
            srv.config_path.read_text().replace('log_level = "debug"', 'log_level = "info"')
        )
        srv.start()
        kport = srv.port("imap")
        ports = {"kinmail": kport}
        if not args.skip_dovecot:
            mail = tmp / "dovecot-mail"
            for u in users:
                local, domain = u.split("@")
                shutil.copytree(srv.maildir(u), mail / domain / local)
            give(mail)
            dovecot = PrivateDovecot(tmp / "dovecot", users={u: PASSWORD for u in users}, mail=mail)
            dovecot.start()
            ports["dovecot"] = dovecot.port("imap")

        async def warm() -> None:  # first SELECT builds each server's index; not part of the numbers
            for name, port in ports.items():
                for u in users:
                    c = Client()
                    await c.login(port, u)
                    await c.cmd("SELECT INBOX")
                    await c.cmd("FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)")
                    await c.cmd("LOGOUT")
                    await c.close()
                del name

        asyncio.run(warm())
        assert srv.proc is not None
        kpid = srv.proc.pid
        settle(kpid)
        print(
            f"\n{'profile':<8} {'clients':>7} {'kinmail ops/s':>14} {'dovecot ops/s':>14} {'ratio':>6}"
            f"  kinmail CPU µs/op (all threads / event loop)"
        )
        for kind in [k for k in args.profiles.split(",") if k and k != "none"]:
            for n in client_counts:
                # several runs, the servers taking turns so that load from elsewhere hits both alike
                runs: dict[str, list[float]] = {name: [] for name in ports}
                per_op: list[tuple[float, float]] = []  # kinmail's CPU a command, all threads and the loop's
                background = [0.0, 0.0]  # kinmail's background work the runs left: CPU seconds, seconds
                for _ in range(args.runs):
                    for name, port in ports.items():
                        # Each run starts with kinmail's background work (full-text indexing of what the run
                        # before appended, and the like) done: it must not slow either server's run.
                        waited, used = settle(kpid)
                        background[0] += used
                        background[1] += waited
                        cpu = cpu_seconds(kpid), cpu_seconds(kpid, kpid)
                        rate, ops = asyncio.run(run_profile(kind, port, users[:n], args.seconds))
                        runs[name].append(rate)
                        if name == "kinmail":
                            used = cpu_seconds(kpid) - cpu[0], cpu_seconds(kpid, kpid) - cpu[1]
                            per_op.append((used[0] / max(ops, 1) * 1e6, used[1] / max(ops, 1) * 1e6))
                result = {name: statistics.median(values) for name, values in runs.items()}
                cpu_text = f"{statistics.median(a for a, _ in per_op):8.0f} / {statistics.median(b for _, b in per_op):.0f}"
                d = result.get("dovecot")
                ratio = f"{result['kinmail'] / d:5.2f}x" if d else "   -"
                dtext = f"{d:14.0f}" if d else f"{'-':>14}"
                print(
                    f"{kind:<8} {n:>7} {result['kinmail']:14.0f} {dtext} {ratio:>6}  {cpu_text}", flush=True
                )
                # shown: it is part of what the profile cost (Dovecot, as configured here, indexes nothing)
                waited, used = settle(kpid)
                background[0] += used
                background[1] += waited
                if background[0] >= 0.1:
                    print(
                        f"{'':<16} and {background[0]:.1f} s of kinmail CPU in the background after the runs"
                        f" ({background[1]:.0f} s)"
                    )
        if args.idle:
            before, after = asyncio.run(idle_connections(kport, users, args.idle, srv.proc.pid))
            print(
                f"\n{args.idle} connections in IDLE: kinmail RSS {before:.0f} MB before, {after:.0f} MB with them"
            )
        if args.big:
            asyncio.run(big_mailbox(kport, big_user))
    finally:
        if dovecot is not None:
            dovecot.stop()
        srv.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
