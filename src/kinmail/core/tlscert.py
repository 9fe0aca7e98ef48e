"""TLS: a self-signed certificate for a fresh install, and the server SSL context the services share.

`cryptography` is imported only to make a certificate: loaded, it adds about 14 MB to a server's memory that
the `ssl` module's context does not need."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

from kinmail.core.atomic import atomic_write
from kinmail.core.errors import KinmailError


def make_self_signed(hostname: str, cert_path: Path, key_path: Path, days: int = 3650) -> None:
    """Write a self-signed ECDSA P-256 certificate for `hostname` (and localhost) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(key_path, key_pem, mode=0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """The SSL context for every TLS listener and STARTTLS; raises KinmailError naming the file on failure."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise KinmailError(f"{cert_path}: cannot load certificate and key: {exc}") from exc
    return context
