"""DKIM signing and verification (RFC 6376; ed25519-sha256 per RFC 8463).

`sign_message(rt, data, domain)` is called by submission before a message is queued: it prepends one
DKIM-Signature per key of the domain (RSA first, then ed25519), relaxed/relaxed, and returns the message
unchanged when the domain has no keys. `verify_message(data, resolver)` checks every DKIM-Signature of a
message against keys fetched through our resolver (tests, and later inbound checks).

Canonicalisation, header selection and verification are dkimpy's; the RSA signature itself is made by
OpenSSL (through `cryptography`), which is some thirty times faster than dkimpy's pure-Python arithmetic, and
the body hash is computed once for both signatures. Keys are read from `<config dir>/dkim/DOMAIN/` (see
`kinmail.mailauth.dkimkeys`) and kept in memory until their `selectors` file changes.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dkim
from dkim.canonicalization import CanonicalizationPolicy

from kinmail.core.errors import KinmailError
from kinmail.core.log import get_logger
from kinmail.dns.resolver import DnsError, DnsNotFound, Resolver
from kinmail.mailauth.dkimkeys import SELECTORS_FILE, Algorithm, DkimKey, domain_dir, load_keys

if TYPE_CHECKING:  # `cryptography` is imported when a key is first loaded: it adds about 14 MB to the server
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

log = get_logger(__name__)

# RFC 6376 §5.4.1: the fields worth signing. Each present occurrence is signed; the names in OVERSIGN are
# listed once more than they occur, so that a field added in transit breaks the signature (§8.15).
SIGN_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "content-language",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
    "autocrypt",
    "openpgp",
)
OVERSIGN = frozenset({"from", "reply-to", "subject", "date", "to", "cc"})
RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
SIG_HEADER_NAME = b"DKIM-Signature"


def keys_dir(rt: Any) -> Path:
    """`<config dir>/dkim`, where `create_keys` puts each domain's keys."""
    return Path(rt.loaded.dir) / "dkim"


# --- signing -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Signer:
    key: DkimKey
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    def sign(self, digest: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        # RFC 8463 §3: ed25519 signs the SHA-256 hash of the canonicalised headers.
        return self.private.sign(digest)


def _load_signer(key: DkimKey) -> _Signer:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        if key.algorithm is Algorithm.RSA_SHA256:
            private = serialization.load_pem_private_key(key.private, password=None)
            if not isinstance(private, rsa.RSAPrivateKey):
                raise ValueError("not an RSA key")
            return _Signer(key, private)
        seed = base64.b64decode(key.private.strip(), validate=True)
        return _Signer(key, ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    except ValueError as exc:
        raise KinmailError(f"DKIM key {key.record_name} cannot be read: {exc}") from exc


_SIGNERS: dict[Path, tuple[int, list[_Signer]]] = {}


def signers_for(keys_root: Path, domain: str) -> list[_Signer]:
    """The domain's loaded keys, re-read when its `selectors` file changes."""
    try:
        folder = domain_dir(keys_root, domain)
        stamp = (folder / SELECTORS_FILE).stat().st_mtime_ns
    except (KinmailError, OSError):
        return []
    cached = _SIGNERS.get(folder)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    signers = [_load_signer(key) for key in load_keys(keys_root, domain)]
    _SIGNERS[folder] = (stamp, signers)
    return signers


def headers_to_sign(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The h= list: each SIGN_HEADERS field as often as it occurs, OVERSIGN fields once more."""
    counts: dict[bytes, int] = {}
    for field_name, _ in headers:
        lower = field_name.lower()
        counts[lower] = counts.get(lower, 0) + 1
    include: list[bytes] = []
    for name in SIGN_HEADERS:
        raw = name.encode()
        count = counts.get(raw, 0) + (1 if name in OVERSIGN else 0)
        include.extend([raw] * count)
    return include


def _fold_tags(tags: list[bytes], first: int) -> bytes:
    """Join tag=value pairs, each followed by ";", breaking lines between tags (RFC 6376 §3.2 allows FWS)."""
    out = b""
    column = first
    for tag in tags:
        piece = tag + b";"
        if column + 1 + len(piece) > 76 and out:
            out += b"\r\n\t" + piece
            column = 8 + len(piece)
        else:
            out += (b" " if out else b"") + piece
            column += 1 + len(piece)
    return out


def _wrap_base64(value: bytes, first: int) -> bytes:
    """Break a base64 value with FWS, which RFC 6376 §3.5 ignores inside b= and bh=."""
    room = max(76 - first, 20)
    parts = [value[:room]]
    for i in range(room, len(value), 68):
        parts.append(value[i : i + 68])
    return b"\r\n\t".join(parts)


def _h_tag(include: list[bytes]) -> bytes:
    """h=from:to:... folded at colons (RFC 6376 §3.5 allows FWS around them)."""
    lines: list[bytes] = []
    line = b"h="
    for i, name in enumerate(include):
        piece = name + (b":" if i < len(include) - 1 else b"")
        if len(line) + len(piece) > 68:
            lines.append(line)
            line = piece
        else:
            line += piece
    lines.append(line)
    return b"\r\n\t".join(lines)


def sign_headers_for(data: bytes, domain: str, signers: list[_Signer], now: int | None = None) -> list[bytes]:
    """The DKIM-Signature header fields (each ending in CRLF) for `data`, one per signer."""
    if not signers:
        return []
    headers, body = dkim.rfc822_parse(data)
    headers = [(bytes(name), bytes(value)) for name, value in headers]
    include = headers_to_sign(headers)
    body_hash = base64.b64encode(hashlib.sha256(RELAXED.canonicalize_body(body)).digest())
    canonical = RELAXED.canonicalize_headers(headers)
    stamp = str(int(time.time() if now is None else now)).encode()
    domain_b = domain.lower().encode("idna") if not domain.isascii() else domain.lower().encode()
    fields: list[bytes] = []
    for signer in signers:
        key = signer.key
        tags = [
            b"v=1",
            b"a=" + key.algorithm.value.encode(),
            b"c=relaxed/relaxed",
            b"d=" + domain_b,
            b"s=" + key.selector.encode(),
            b"t=" + stamp,
        ]
        prefix = _fold_tags(tags, len(SIG_HEADER_NAME) + 1)
        prefix += b"\r\n\t" + _h_tag(include) + b";\r\n\tbh=" + body_hash + b";\r\n\tb="
        digest = hashlib.sha256()
        dkim.hash_headers(digest, RELAXED, canonical, include, (SIG_HEADER_NAME, b" " + prefix), None)
        signature = base64.b64encode(signer.sign(digest.digest()))
        fields.append(SIG_HEADER_NAME + b": " + prefix + _wrap_base64(signature, 10) + b"\r\n")
    return fields


def sign_message(rt: Any, data: bytes, domain: str) -> bytes:
    """`data` with DKIM-Signature fields prepended for `domain`; unchanged when the domain has no keys.

    Line ends of the added fields follow the message's own (CRLF, or LF for a message stored with LF).
    A key that cannot be read is logged and the message goes out unsigned rather than not at all.
    """
    try:
        signers = signers_for(keys_dir(rt), domain)
    except KinmailError as exc:
        log.error("dkim.key_error", domain=domain, reason=str(exc))
        return data
    if not signers:
        return data
    crlf = data.find(b"\r\n")
    lf = data.find(b"\n")
    uses_crlf = lf == -1 or crlf == lf - 1
    canonical = data if uses_crlf else data.replace(b"\n", b"\r\n")
    try:
        fields = sign_headers_for(canonical, domain, signers)
    except dkim.DKIMException as exc:
        log.info("dkim.unsignable", domain=domain, reason=str(exc))
        return data
    added = b"".join(fields)
    if not uses_crlf:
        added = added.replace(b"\r\n", b"\n")
    log.debug("dkim.signed", domain=domain, selectors=",".join(s.key.selector for s in signers))
    return added + data


# --- verification --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DkimResult:
    """The outcome of one DKIM-Signature: `ok` when it verified; `reason` says why not."""

    domain: str
    selector: str
    algorithm: str
    ok: bool
    reason: str = ""


_SIG_TAG = re.compile(rb"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)")


def _tags(value: bytes) -> dict[bytes, bytes]:
    return {m.group(1): re.sub(rb"\s+", b"", m.group(2)) for m in _SIG_TAG.finditer(value)}


async def verify_message(data: bytes, resolver: Resolver) -> list[DkimResult]:
    """Verify each DKIM-Signature of `data`, fetching keys through `resolver`; [] when unsigned."""
    try:
        headers, _ = dkim.rfc822_parse(data)
    except dkim.DKIMException as exc:
        return [DkimResult("", "", "", False, f"unparsable message: {exc}")]
    signatures = [bytes(value) for name, value in headers if bytes(name).lower() == b"dkim-signature"]
    records: dict[str, bytes | None] = {}
    results: list[DkimResult] = []
    for index, value in enumerate(signatures):
        tags = _tags(value)
        domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace").lower()
        algorithm = tags.get(b"a", b"").decode("ascii", "replace")
        name = f"{selector}._domainkey.{domain}"
        if domain and selector and name not in records:
            try:
                found = await resolver.txt(name)
                records[name] = found[0] if found else None
            except DnsNotFound:
                records[name] = None
            except DnsError as exc:
                results.append(DkimResult(domain, selector, algorithm, False, f"temperror: {exc}"))
                continue

        def dnsfunc(qname: Any, timeout: float = 5) -> bytes | None:
            text = qname.decode() if isinstance(qname, bytes) else str(qname)
            return records.get(text.rstrip(".").lower())

        try:
            verifier = dkim.DKIM(data, logger=_QUIET, minkey=1024)
            ok = bool(verifier.verify(idx=index, dnsfunc=dnsfunc))
            reason = "" if ok else "signature did not verify"
        except dkim.DKIMException as exc:
            ok, reason = False, str(exc) or type(exc).__name__
        except Exception as exc:  # dkimpy lets some malformed input through as other errors
            log.debug("dkim.verify_error", domain=domain, selector=selector, reason=repr(exc))
            ok, reason = False, f"malformed signature or key: {type(exc).__name__}"
        results.append(DkimResult(domain, selector, algorithm, ok, reason))
    return results


_QUIET = logging.getLogger("kinmail.mailauth.dkimpy")
_QUIET.setLevel(logging.CRITICAL)
