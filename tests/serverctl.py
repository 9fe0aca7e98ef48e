"""Start a real `kinmail serve` from a temporary config on free loopback ports, for tests and benchmarks.

    with KinmailServer(tmp_path) as server:        # or the `server` fixture in conftest.py
        smtplib.SMTP("127.0.0.1", server.port("smtp"))

Users alice@example.test and bob@example.test exist with the passwords in USERS. `extra_config` is TOML
appended to the generated file (sections must not repeat the generated ones: pass `sections=` to merge).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kinmail.auth.passwords import hash_password
from kinmail.core.tlscert import make_self_signed

SERVICES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "managesieve", "http")
USERS = {"alice@example.test": "alice-secret-1", "bob@example.test": "bob-secret-2"}
DOMAINS = ["example.test", "example.net"]
HOST = "127.0.0.1"

_CERT_CACHE: dict[str, bytes] = {}
_HASH_CACHE: dict[str, str] = {}


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cached_hash(password: str) -> str:
    if password not in _HASH_CACHE:
        _HASH_CACHE[password] = hash_password(password)
    return _HASH_CACHE[password]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


class PortTaken(Exception):
    """Another process bound one of the ports chosen for the server."""


class KinmailServer:
    """A `kinmail serve` subprocess with its own config folder under `root`."""

    def __init__(
        self,
        root: Path,
        *,
        sections: dict[str, dict[str, Any]] | None = None,
        users: dict[str, str] | None = None,
        aliases: str = "postmaster@example.test alice@example.test\n",
        domains: list[str] | None = None,
        services: tuple[str, ...] = SERVICES,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "kinmail.toml"
        self.data_dir = root / "data"
        self.services = services
        self.users = dict(USERS if users is None else users)
        self.domains = domains or list(DOMAINS)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "serve.log"
        self._write_tls()
        self._sections = sections or {}
        self._generated_config = ""
        self._write_generated_config()
        self.write_users()
        (root / "aliases").write_text(aliases)

    def _write_generated_config(self) -> None:
        """Pick free ports and write the config; `start` does it again when a port was taken meanwhile."""
        self.ports = {}
        for name in self.services:  # the kernel may hand out a just-closed port again: every service its own
            port = free_port()
            while port in self.ports.values():
                port = free_port()
            self.ports[name] = port
        merged: dict[str, dict[str, Any]] = {
            "listen": {
                name: [f"{HOST}:{self.ports[name]}"] if name in self.ports else [] for name in SERVICES
            },
            "dns": {"nameservers": ["127.0.0.1:9"], "timeout": 0.5},
        }
        for name, values in self._sections.items():
            merged.setdefault(name, {}).update(values)
        self.write_config(merged)
        self._generated_config = self.config_path.read_text()

    # --- files -------------------------------------------------------------------------------------------
    def _write_tls(self) -> None:
        tls = self.root / "tls"
        tls.mkdir(exist_ok=True)
        if not _CERT_CACHE:
            make_self_signed("localhost", tls / "cert.pem", tls / "key.pem")
            _CERT_CACHE["cert"] = (tls / "cert.pem").read_bytes()
            _CERT_CACHE["key"] = (tls / "key.pem").read_bytes()
        else:
            (tls / "cert.pem").write_bytes(_CERT_CACHE["cert"])
            (tls / "key.pem").write_bytes(_CERT_CACHE["key"])
            os.chmod(tls / "key.pem", 0o600)
        self.cert_path = tls / "cert.pem"

    def write_config(self, sections: dict[str, dict[str, Any]], top: dict[str, Any] | None = None) -> None:
        lines = [
            'hostname = "mail.example.test"',
            'data_dir = "data"',
            f"domains = {_toml_value(self.domains)}",
            'log_level = "debug"',
        ]
        for key, value in (top or {}).items():
            lines.append(f"{key} = {_toml_value(value)}")
        for name, values in sections.items():
            lines.append(f"\n[{name}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        self.config_path.write_text("\n".join(lines) + "\n")

    def write_users(self) -> None:
        text = "".join(f"{user}:{cached_hash(pw)}\n" for user, pw in self.users.items())
        (self.root / "users").write_text(text)

    def maildir(self, address: str) -> Path:
        local, _, domain = address.partition("@")
        return self.data_dir / "mail" / domain / local

    # --- process -----------------------------------------------------------------------------------------
    def kinmail(
        self, *args: str, input: bytes | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a `kinmail` CLI command against this server's config."""
        return subprocess.run(
            [sys.executable, "-m", "kinmail", "--config", str(self.config_path), *args],
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def start(self, timeout: float = 20.0, env: dict[str, str] | None = None) -> KinmailServer:
        """Run `kinmail serve` and wait for it to be ready; `env` adds environment variables.

        Free ports are found before the server binds them, so a test running in parallel may take one in
        between: when that happens to a config this class wrote, new ports are chosen and it starts again."""
        for _attempt in range(4):
            try:
                return self._start_once(timeout, env)
            except PortTaken:
                self._write_generated_config()
        return self._start_once(timeout, env)

    def _start_once(self, timeout: float, env: dict[str, str] | None) -> KinmailServer:
        log_start = len(self.log())
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kinmail", "--config", str(self.config_path), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = self.log()[log_start:]
                if "cannot listen on" in output and self.config_path.read_text() == self._generated_config:
                    self.proc = None
                    raise PortTaken(output)
                raise RuntimeError(f"kinmail serve exited with {self.proc.returncode}:\n{self.log()}")
            if "event=serve.ready" in self.log()[log_start:]:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"kinmail serve did not become ready:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle: str, timeout: float = 5.0) -> None:
        """Wait for `needle` in the log: a line logged on the event loop is written when the loop's current
        turn is done, which may be after the client saw the answer."""
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            assert time.monotonic() < deadline, f"no {needle!r} in the log"
            time.sleep(0.02)

    def port(self, service: str) -> int:
        return self.ports[service]

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def __enter__(self) -> KinmailServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
