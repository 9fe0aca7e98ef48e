"""DKIM signing keys, one RSA 2048 and one ed25519 (RFC 8463) key per domain.

`kinmail init` and `kinmail domain add` call `create_keys(config_dir / "dkim", domain)`; signing
(`kinmail.mailauth.dkim`) and `kinmail dns` read them with `load_keys`. On disk, under `KEYS_DIR/DOMAIN/`:

    selectors               which selector each algorithm signs with ("rsa-sha256 rsa202611")
    SELECTOR.key            the private key, mode 0600: PEM (PKCS#1) for RSA, base64 of the 32-byte seed for ed25519
    SELECTOR.txt            the TXT record to publish at SELECTOR._domainkey.DOMAIN (RFC 6376 §3.6.1)

Selectors are named after the month the key was made (`rsa202611`, `ed202611`), so a later key can be
published beside the old one before the `selectors` file is switched to it. Existing keys are never replaced.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from kinmail.core.atomic import atomic_write
from kinmail.core.errors import KinmailError

SELECTORS_FILE = "selectors"
RSA_BITS = 2048


class Algorithm(StrEnum):
    RSA_SHA256 = "rsa-sha256"
    ED25519_SHA256 = "ed25519-sha256"


_PREFIX = {Algorithm.RSA_SHA256: "rsa", Algorithm.ED25519_SHA256: "ed"}


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One signing key of a domain."""

    domain: str
    selector: str
    algorithm: Algorithm
    private: bytes  # as dkimpy takes it: PEM for RSA, base64 seed for ed25519
    record: str  # the TXT record value, "v=DKIM1; k=rsa; p=..."

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def domain_dir(keys_dir: Path, domain: str) -> Path:
    domain = domain.strip().rstrip(".").lower()
    if not domain or "/" in domain or domain.startswith(".") or "\x00" in domain:
        raise KinmailError(f"not a domain name: {domain!r}")
    return Path(keys_dir) / domain


def _new_rsa() -> tuple[bytes, str]:
    from cryptography.hazmat.primitives import serialization  # loaded only to make keys (14 MB)
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def _new_ed25519() -> tuple[bytes, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    # RFC 8463 §4.2: p= is the base64 of the raw 32-byte public key.
    return base64.b64encode(seed) + b"\n", f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"


def _read_selectors(path: Path) -> dict[Algorithm, str]:
    selectors: dict[Algorithm, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return selectors
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) == 2 and fields[0] in Algorithm.__members__.values():
            selectors[Algorithm(fields[0])] = fields[1]
    return selectors


def create_keys(keys_dir: Path, domain: str) -> None:
    """Make the domain's RSA and ed25519 keys unless it has them already."""
    folder = domain_dir(keys_dir, domain)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    selectors = _read_selectors(folder / SELECTORS_FILE)
    month = time.strftime("%Y%m", time.gmtime())
    changed = False
    for algorithm, make in ((Algorithm.RSA_SHA256, _new_rsa), (Algorithm.ED25519_SHA256, _new_ed25519)):
        selector = selectors.get(algorithm)
        if selector and (folder / f"{selector}.key").exists():
            continue
        selector = f"{_PREFIX[algorithm]}{month}"
        private, record = make()
        atomic_write(folder / f"{selector}.key", private, mode=0o600)
        atomic_write(folder / f"{selector}.txt", record + "\n", mode=0o644)
        selectors[algorithm] = selector
        changed = True
    if changed:
        lines = [f"# DKIM selectors of {folder.name}: algorithm selector (key in SELECTOR.key)"]
        lines += [f"{algorithm.value} {selector}" for algorithm, selector in selectors.items()]
        atomic_write(folder / SELECTORS_FILE, "\n".join(lines) + "\n", mode=0o644)


def load_keys(keys_dir: Path, domain: str) -> list[DkimKey]:
    """The domain's signing keys (RSA first); [] when it has none. Raises KinmailError on an unreadable key."""
    try:
        folder = domain_dir(keys_dir, domain)
    except KinmailError:
        return []
    keys: list[DkimKey] = []
    for algorithm, selector in sorted(_read_selectors(folder / SELECTORS_FILE).items()):
        try:
            private = (folder / f"{selector}.key").read_bytes()
            record = (folder / f"{selector}.txt").read_text().strip()
        except OSError as exc:
            raise KinmailError(f"DKIM key of {folder.name} ({selector}): {exc.strerror or exc}") from exc
        keys.append(DkimKey(folder.name, selector, algorithm, private, record))
    keys.sort(key=lambda k: k.algorithm != Algorithm.RSA_SHA256)
    return keys
