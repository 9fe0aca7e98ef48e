"""POP3 RETR of 1,000 messages: kinmail against Dovecot's pop3d, side by side in one run.

    .venv/bin/python bench/bench_pop3.py [--messages 1000] [--rounds 15]

Both servers serve the same Maildir files (a copy for Dovecot, which writes its own index files into it) on
loopback ports, both without TLS; Dovecot runs from a private config in a temporary folder. Before timing,
each server is warmed up (its index, the page cache) by one full download with each client, and what each
sends is checked byte for byte against the messages written. Two clients are timed on each: poplib issuing
RETR after RETR (what most clients do), and a pipelined client that sends every RETR at once (RFC 2449
PIPELINING) and reads the answers in large blocks, which takes client cost out of the numbers. Rounds
alternate the servers and which goes first, so that load from elsewhere hits both alike; the median of
`--rounds` rounds is reported for each, with the ratio of the medians, the median of the per-round ratios
(each round's two runs paired) and their spread.
Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import poplib
import random
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.peers import PrivateDovecot, give, private_tmp, write_maildir
from tests.serverctl import KinmailServer

USER = "alice@example.test"
PASSWORD = "alice-secret-1"
WORDS = (
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
    "sieve",
)


def make_message(rng: random.Random, i: int) -> bytes:
    lines = [
        f"From: Sender {i} <sender{i}@example.net>",
        f"To: {USER}",
        f"Subject: benchmark message {i}",
        f"Message-ID: <bench{i}@example.net>",
        "Date: Wed, 25 Nov 2026 12:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
    ]
    size = int(rng.lognormvariate(8.6, 0.9))  # median ~5 KB, a few hundred KB at most
    body: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        if rng.random() < 0.02:
            line = "." + line  # some lines need dot-stuffing
        body.append(line)
        total += len(line) + 2
    return ("\r\n".join(lines + body) + "\r\n").encode()


def run_poplib(port: int, count: int) -> tuple[float, int]:
    pop = poplib.POP3("127.0.0.1", port, timeout=60)
    pop.user(USER)
    pop.pass_(PASSWORD)
    assert pop.stat()[0] == count
    started = time.perf_counter()
    octets = 0
    for i in range(1, count + 1):
        octets += pop.retr(i)[2]
    elapsed = time.perf_counter() - started
    pop.quit()
    return elapsed, octets


def run_pipelined(port: int, count: int) -> tuple[float, int]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode())
    reader.readline()
    assert reader.readline().startswith(b"+OK")
    started = time.perf_counter()
    sock.sendall(b"".join(b"RETR %d\r\n" % i for i in range(1, count + 1)))
    seen = octets = 0
    tail = b""
    while seen < count:
        block = sock.recv(1 << 20)
        if not block:
            raise RuntimeError("connection closed")
        octets += len(block)
        # terminators inside the block, and one cut in two by the block boundary (no copy of the block)
        seen += block.count(b"\r\n.\r\n") + (tail + block[:4]).count(b"\r\n.\r\n")
        tail = block[-4:]
    elapsed = time.perf_counter() - started
    sock.sendall(b"QUIT\r\n")
    while sock.recv(1 << 16):  # wait for the server to finish the session, so the next one is not refused
        pass
    sock.close()
    return elapsed, octets


def check_messages(port: int, messages: list[bytes]) -> None:
    """Every message arrives byte for byte through poplib (which undoes the dot-stuffing)."""
    pop = poplib.POP3("127.0.0.1", port, timeout=60)
    pop.user(USER)
    pop.pass_(PASSWORD)
    for i, data in enumerate(messages, 1):
        lines = pop.retr(i)[1]
        if b"\r\n".join(lines) + b"\r\n" != data:
            raise RuntimeError(f"message {i} from port {port} differs from the one written")
    pop.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    rng = random.Random(5)
    messages = [make_message(rng, i) for i in range(args.messages)]
    with private_tmp() as tmp:
        kinmail = KinmailServer(tmp / "kinmail", services=("pop3",))
        write_maildir(kinmail.maildir(USER), messages)
        mail = tmp / "dovecot-mail"
        shutil.copytree(kinmail.maildir(USER), mail / "example.test" / "alice")
        give(mail)
        dovecot = PrivateDovecot(tmp / "dovecot", protocols=("pop3",), users={USER: PASSWORD}, mail=mail)
        with kinmail, dovecot:
            kport, dport = kinmail.port("pop3"), dovecot.port("pop3")
            for port in (kport, dport):  # warm both (index, page cache) and check what they send
                check_messages(port, messages)
                run_poplib(port, args.messages)
                run_pipelined(port, args.messages)
            report(args, messages, kport, dport)


def report(args: argparse.Namespace, messages: list[bytes], kport: int, dport: int) -> None:
    total = sum(len(m) for m in messages)
    median = sorted(map(len, messages))[len(messages) // 2]
    results: dict[tuple[str, str], list[float]] = {}
    servers = [("kinmail", kport), ("dovecot", dport)]
    for client, run in (("poplib", run_poplib), ("pipelined", run_pipelined)):
        for round_ in range(args.rounds):  # alternate the servers and which goes first
            for name, port in servers if round_ % 2 == 0 else servers[::-1]:
                results.setdefault((client, name), []).append(run(port, args.messages)[0])
    print(
        f"RETR of {args.messages} messages ({total / 1e6:.1f} MB, median {median} B), "
        f"median of {args.rounds} rounds; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'client':<10} {'server':<8} {'seconds':>8} {'msg/s':>8} {'MB/s':>7}  kinmail/dovecot")
    for client in ("poplib", "pipelined"):
        dovecot = results[(client, "dovecot")]
        for name in ("kinmail", "dovecot"):
            times = results[(client, name)]
            secs = statistics.median(times)
            line = f"{client:<10} {name:<8} {secs:8.3f} {args.messages / secs:8.0f} {total / secs / 1e6:7.1f}"
            if name == "kinmail":
                paired = sorted(d / k for d, k in zip(dovecot, times, strict=True))
                line += (
                    f"  {statistics.median(dovecot) / secs:.2f}x"
                    f" (per round: median {statistics.median(paired):.2f}x, {paired[0]:.2f}-{paired[-1]:.2f})"
                )
            print(line)


if __name__ == "__main__":
    main()
