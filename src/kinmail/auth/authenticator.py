"""`Authenticator.login`: the one place every protocol (SMTP AUTH, IMAP, POP3, ManageSieve, webmail) checks a
user name and password, with login throttling shared by all of them.

The slow hash check runs in a worker thread (`asyncio.to_thread`) so the event loop never blocks. Successful
checks are remembered in a small in-memory cache keyed by the stored hash and a keyed digest of the password
(the digest uses a random per-process key, so the cache holds nothing an attacker could reuse), which makes
repeated logins of busy clients cheap; changing a password changes the stored hash and so misses the cache.
A login for an unknown user checks the password against a decoy hash, so its answer takes as long as a
real one. Logs `auth.ok` and `auth.fail` with user, ip and service — never the password.

Created once by `Runtime` as `rt.auth`. Keeps the throttling state in `data_dir/state/auth.sqlite` (see
`kinmail.auth.throttle`: counted in memory, written through so that a restart keeps it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinmail.auth.passwords import hash_password, verify_password
from kinmail.auth.throttle import Limits, Throttle, ip_key
from kinmail.core.log import get_logger

log = get_logger(__name__)

CACHE_SIZE = 4096
STATE_FILE = "auth.sqlite"
VERIFY_CONCURRENCY = max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class AuthResult:
    """`ok`: the password matched; `user`: the canonical (lower-case) address when ok; `throttled`: refused
    without checking because of too many failures (IMAP answers `NO [UNAVAILABLE]`)."""

    ok: bool
    user: str | None = None
    throttled: bool = False
    delay: float = 0.0


class Authenticator:
    """Checks logins against `rt.directory.users`, reading `rt.config.auth` at each call (reload-safe).

    `clock` gives wall-clock seconds (the throttling state outlives the process); `sleep` waits out a delay."""

    def __init__(
        self,
        rt: Any,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._rt = rt
        self._sleep = sleep
        data_dir = getattr(rt, "data_dir", None)  # stand-ins without one (benchmarks) count in memory only
        self.throttle = Throttle(clock, Path(data_dir) / "state" / STATE_FILE if data_dir else None)
        self._cache: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._cache_key = secrets.token_bytes(32)
        self._slots: asyncio.Semaphore | None = None
        self._decoy_hash: str | None = None

    def _limits(self) -> Limits:
        conf = self._rt.config.auth
        return Limits(
            free_failures=conf.throttle_free_failures,
            max_delay=conf.throttle_max_delay,
            lockout_failures=conf.throttle_lockout_failures,
            window=float(conf.throttle_window),
        )

    def _digest(self, password: str) -> bytes:
        return hmac.new(self._cache_key, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    async def _verify(self, stored: str, password: str) -> bool:
        key = (stored, self._digest(password))
        if key in self._cache:
            self._cache.move_to_end(key)
            return True
        if self._slots is None:
            self._slots = asyncio.Semaphore(VERIFY_CONCURRENCY)
        async with self._slots:  # argon2id takes 64 MiB and a core for ~0.1 s: a few at a time
            ok = await asyncio.to_thread(verify_password, stored, password)
        if ok:
            self._cache[key] = None
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return ok

    async def _decoy(self) -> str:
        """A hash of a random password, checked for unknown users (made once, on first need, off the loop)."""
        if self._decoy_hash is None:
            self._decoy_hash = await asyncio.to_thread(hash_password, secrets.token_urlsafe(24))
        return self._decoy_hash

    async def login(
        self, username: str, password: str, *, remote_ip: str | None = None, service: str = ""
    ) -> AuthResult:
        """Check `username`/`password`; applies the throttling delay (awaited) before answering."""
        user = username.strip().lower()
        limits = self._limits()
        keys = [k for k in (ip_key(remote_ip), f"user:{user}" if user else None) if k]
        if self.throttle.locked(keys, limits):
            log.warning("auth.throttled", user=user, ip=remote_ip, service=service)
            return AuthResult(False, None, throttled=True)
        delay = self.throttle.delay(keys, limits)
        if delay > 0:
            await self._sleep(delay)
        account = self._rt.directory.users.get(user) if user else None
        if account is not None and account.password:
            ok = await self._verify(account.password, password)
        else:
            # As slow as a real check, so that the answer's timing does not tell which accounts exist.
            await self._verify(await self._decoy(), password)
            ok = False
        if ok:
            self.throttle.succeed(keys)
            log.info("auth.ok", user=user, ip=remote_ip, service=service)
            return AuthResult(True, user, delay=delay)
        self.throttle.fail(keys, limits)
        reason = (
            "unknown user"
            if account is None
            else ("login disabled" if not account.password else "bad password")
        )
        log.info("auth.fail", user=user, ip=remote_ip, service=service, reason=reason)
        return AuthResult(False, None, delay=delay)
