"""`kinmail demo`: a throw-away set-up in a folder (domain example.test, one user, high ports on 127.0.0.1)."""

from __future__ import annotations

import shutil
from pathlib import Path

from kinmail.auth.passwords import hash_password
from kinmail.core.atomic import atomic_write
from kinmail.core.tlscert import make_self_signed

DEMO_DOMAIN = "example.test"
DEMO_USER = f"demo@{DEMO_DOMAIN}"


def prepare_demo(folder: Path, ports: dict[str, int], password: str) -> tuple[Path, str, str]:
    """Write config, users, aliases and a certificate into `folder` (wiping an earlier demo's data).

    Returns (config path, user, password)."""
    if (folder / "data").exists():
        shutil.rmtree(folder / "data")
    folder.mkdir(parents=True, exist_ok=True)
    listen = "\n".join(f'{name} = ["127.0.0.1:{port}"]' for name, port in ports.items())
    listen += "\nhttp = []  # no web interface yet"
    config = f"""# kinmail demo — throw-away, made by `kinmail demo`
hostname = "localhost"
data_dir = "data"
domains = ["{DEMO_DOMAIN}"]

[listen]
{listen}

[delivery]
remote_smtp_port = 25
"""
    atomic_write(folder / "kinmail.toml", config)
    atomic_write(folder / "users", f"{DEMO_USER}:{hash_password(password)}\n", mode=0o600)
    atomic_write(folder / "aliases", f"postmaster@{DEMO_DOMAIN} {DEMO_USER}\n")
    if not (folder / "tls" / "cert.pem").exists():
        make_self_signed("localhost", folder / "tls" / "cert.pem", folder / "tls" / "key.pem")
    return folder / "kinmail.toml", DEMO_USER, password
