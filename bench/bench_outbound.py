"""Outbound throughput: DKIM-sign (RSA 2048 + ed25519) and deliver 2 KB messages to a local SMTP sink.

    .venv/bin/python bench/bench_outbound.py [--messages 3000] [--concurrency 8] [--sink smtp-sink|aiosmtpd]

The sink is Postfix's `smtp-sink` (a separate C process, so it costs the measured process nothing) or, when
asked, aiosmtpd in a child process. Mail is routed by MX: a test DNS server (tests/dnsserver.py) names
127.0.0.1 as the MX of `sink.test`, and `[delivery] remote_smtp_port` points at the sink. Each message is
signed with `kinmail.mailauth.dkim.sign_message`, written to a file as the queue would, and handed to
`RemoteTransport.deliver` by one of `--concurrency` workers (the queue runs several deliveries at once); the
connection cache carries many messages per connection. Prints messages per second.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.dnsserver import DnsServer  # noqa: E402
from tests.fakemx import pick_port  # noqa: E402

from kinmail.config.directory import Directory  # noqa: E402
from kinmail.config.load import load_config  # noqa: E402
from kinmail.mailauth.dkim import sign_message  # noqa: E402
from kinmail.mailauth.dkimkeys import create_keys  # noqa: E402
from kinmail.smtpclient.transport import DeliveryStatus, RemoteTransport  # noqa: E402

AIOSMTPD_SINK = """
import asyncio, sys
from aiosmtpd.controller import Controller
class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"
c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"""


def message(n: int) -> bytes:
    head = (
        f"From: Alice <alice@example.test>\r\nTo: someone{n}@sink.test\r\nSubject: benchmark message {n}\r\n"
        f"Date: Wed, 25 Nov 2026 14:00:00 +0000\r\nMessage-ID: <bench{n}@example.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * ((2048 - len(head)) // len(line) + 1)
    return head + body[: 2048 - len(head)]


def start_sink(kind: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "smtp-sink":
        exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        # -u: the user to run as when started by root; 1000: the listen backlog.
        proc = subprocess.Popen([exe, "-u", "nobody", f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        import socket

        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return proc
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")
    proc = subprocess.Popen(
        [sys.executable, "-c", AIOSMTPD_SINK, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


async def run(messages: int, concurrency: int, port: int, dns_address: str, folder: Path) -> float:
    (folder / "kinmail.toml").write_text(
        'hostname = "mail.example.test"\ndata_dir = "data"\ndomains = ["example.test"]\n'
        f'[delivery]\nremote_smtp_port = {port}\n[dns]\nnameservers = ["{dns_address}"]\n'
    )
    (folder / "users").write_text("")
    create_keys(folder / "dkim", "example.test")
    loaded = load_config(folder / "kinmail.toml")
    rt = types.SimpleNamespace(config=loaded.config, loaded=loaded, directory=Directory.load(loaded))
    transport = RemoteTransport(rt)
    spool = folder / "spool"
    spool.mkdir()
    work: asyncio.Queue[int] = asyncio.Queue()
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while not work.empty():
            n = work.get_nowait()
            data = sign_message(rt, message(n), "example.test")
            path = spool / f"{n}.eml"
            path.write_bytes(data)
            results = await transport.deliver(
                "alice@example.test", [f"someone{n}@sink.test"], path, queue_id=f"B{n}"
            )
            if results[0].status != DeliveryStatus.DELIVERED:
                failures += 1
            path.unlink()

    # Warm up: key loading, the DNS answer cache, the first connections.
    for n in range(concurrency):
        work.put_nowait(n)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    for n in range(messages):
        work.put_nowait(n)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await transport.aclose()
    if failures:
        print(f"{failures} deliveries failed", file=sys.stderr)
    print(f"connections reused {transport.pool.reused} times")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sink", choices=("smtp-sink", "aiosmtpd"), default="smtp-sink")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    port = pick_port("127.0.0.1")
    sink = start_sink(args.sink, port)
    try:
        with DnsServer(ttl=3600) as dns_server, tempfile.TemporaryDirectory() as tmp:
            dns_server.set("sink.test", "MX", ["10 mx.sink.test."])
            dns_server.set("mx.sink.test", "A", ["127.0.0.1"])
            elapsed = asyncio.run(run(args.messages, args.concurrency, port, dns_server.address, Path(tmp)))
    finally:
        sink.terminate()
        sink.wait()
    rate = args.messages / elapsed
    print(
        f"outbound: {args.messages} messages of 2 KB, DKIM rsa-sha256 + ed25519-sha256, "
        f"{args.concurrency} workers, sink {args.sink}: {elapsed:.2f} s, {rate:.0f} msg/s"
    )


if __name__ == "__main__":
    main()
