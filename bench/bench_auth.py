"""Logins and lookups: `Authenticator.login` (cold argon2id check, cached repeat logins, concurrent logins in
one event loop), `Directory.resolve`, and map lookups (texthash, regexp and cidr tables of 1,000 lines).

    .venv/bin/python bench/bench_auth.py [--logins 20000] [--users 50]

In one process, no network: this is the cost kinmail adds to each IMAP/POP3/SMTP login, not a protocol
benchmark. Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from kinmail.auth.authenticator import Authenticator  # noqa: E402
from kinmail.auth.passwords import hash_password, verify_password  # noqa: E402
from kinmail.config.directory import Directory  # noqa: E402
from kinmail.config.load import load_config  # noqa: E402
from kinmail.config.maps import lookup_address, open_map  # noqa: E402


def _setup(folder: Path, users: int) -> SimpleNamespace:
    (folder / "kinmail.toml").write_text('domains = ["example.test"]\ndata_dir = "data"\n')
    stored = hash_password("secret")
    (folder / "users").write_text("".join(f"user{i}@example.test:{stored}\n" for i in range(users)))
    (folder / "aliases").write_text(
        "".join(f"alias{i}@example.test user{i % users}@example.test\n" for i in range(1000))
        + "@example.test user0@example.test\n"
    )
    loaded = load_config(folder / "kinmail.toml")
    return SimpleNamespace(config=loaded.config, directory=Directory.load(loaded))


def _rate(label: str, count: int, seconds: float, unit: str = "/s") -> None:
    print(
        f"{label}: {count / seconds:,.0f}{unit} ({seconds * 1e6 / count:.1f} µs each, {count} in {seconds:.2f} s)"
    )


async def _logins(rt: SimpleNamespace, count: int, users: int) -> None:
    auth = Authenticator(rt)
    started = time.perf_counter()
    result = await auth.login("user0@example.test", "secret", remote_ip="192.0.2.1", service="imap")
    print(
        f"first login (argon2id check in a thread): {(time.perf_counter() - started) * 1000:.1f} ms, ok={result.ok}"
    )
    for i in range(users):  # warm the cache for every user
        await auth.login(f"user{i}@example.test", "secret", remote_ip="192.0.2.1")
    started = time.perf_counter()
    for i in range(count):
        await auth.login(f"user{i % users}@example.test", "secret", remote_ip=f"192.0.2.{i % 250 + 1}")
    _rate("cached logins, one after another", count, time.perf_counter() - started)
    started = time.perf_counter()
    await asyncio.gather(
        *(
            auth.login(f"user{i % users}@example.test", "secret", remote_ip=f"198.51.100.{i % 250 + 1}")
            for i in range(count)
        )
    )
    _rate("cached logins, all at once in one loop", count, time.perf_counter() - started)


def _lookups(folder: Path, rt: SimpleNamespace) -> None:
    directory: Directory = rt.directory
    count = 100_000
    started = time.perf_counter()
    for i in range(count):
        directory.resolve(f"alias{i % 1000}@example.test")
    _rate("Directory.resolve of an alias", count, time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(count):
        directory.resolve(f"nobody{i}+tag@example.test")
    _rate("Directory.resolve through the catch-all", count, time.perf_counter() - started)

    (folder / "big.txt").write_text("".join(f"key{i}@example.org value{i}\n" for i in range(1000)))
    (folder / "big.re").write_text("".join(f"/^key{i}@/ value{i}\n" for i in range(1000)))
    nets = [ipaddress.IPv4Network((i << 12, 20)) for i in range(1000)]
    (folder / "big.cidr").write_text("".join(f"{net} value{i}\n" for i, net in enumerate(nets)))
    for spec, key in (
        ("texthash:big.txt", "nokey+ext@example.org"),
        ("regexp:big.re", "key999@example.org"),
        ("cidr:big.cidr", str(nets[-1].network_address)),
    ):
        table = open_map(spec, folder)
        rounds = 2000 if spec.startswith(("regexp", "cidr")) else 100_000
        started = time.perf_counter()
        for _ in range(rounds):
            lookup_address(table, key) if spec.startswith("texthash") else table.lookup(key)
        _rate(f"{spec} worst-case lookup (1,000 lines)", rounds, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rt = _setup(folder, args.users)
        stored = rt.directory.users.get("user0@example.test").password
        started = time.perf_counter()
        for _ in range(10):
            verify_password(stored, "secret")
        print(f"argon2id verification (t=3, m=64 MiB, p=4): {(time.perf_counter() - started) * 100:.1f} ms")
        asyncio.run(_logins(rt, args.logins, args.users))
        _lookups(folder, rt)


if __name__ == "__main__":
    main()
