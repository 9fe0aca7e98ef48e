"""A user's Sieve scripts on disk, shared by ManageSieve (which edits them) and delivery (which runs the
active one).

Layout: `data_dir/sieve/DOMAIN/USER/NAME.sieve`, one file per script, and `.active` holding the name of the
active script (absent or empty: none). Every write is atomic (`kinmail.core.atomic.atomic_write`). Script
names follow RFC 5804 §1.6 (UTF-8, no control characters) and, for the file system, contain no `/` and do
not start with `.`.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from pathlib import Path

from kinmail.core.atomic import atomic_write, fsync_dir
from kinmail.core.errors import KinmailError

SUFFIX = ".sieve"
ACTIVE = ".active"
MAX_NAME = 128


class ScriptStoreError(KinmailError):
    """A bad script name, or a script that does not exist or already exists."""


class NoSuchScript(ScriptStoreError):
    pass


class ScriptExists(ScriptStoreError):
    pass


class ActiveScript(ScriptStoreError):
    """The active script may not be deleted (RFC 5804 §2.10)."""


def check_name(name: str) -> str:
    """Return `name` when it is a usable script name, else raise ScriptStoreError."""
    if not name or len(name) > MAX_NAME:
        raise ScriptStoreError("script name must be 1 to 128 characters")
    if name.startswith(".") or "/" in name or "\\" in name:
        raise ScriptStoreError("script name may not contain '/' nor start with '.'")
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Cn"):
            raise ScriptStoreError("script name contains a forbidden character")
    return name


class ScriptStore:
    """The scripts of one user (`address` as `user@domain`) under `data_dir/sieve/DOMAIN/USER/`."""

    def __init__(self, data_dir: Path, address: str) -> None:
        local, _, domain = address.lower().rpartition("@")
        for part in (local, domain):  # each becomes one folder name: never `..`, a `/` or a hidden name
            if not part or part.startswith(".") or "/" in part or "\0" in part:
                raise ScriptStoreError(f"not a usable address: {address!r}")
        self.dir = Path(data_dir) / "sieve" / domain / local

    def _path(self, name: str) -> Path:
        return self.dir / (check_name(name) + SUFFIX)

    def _active_name(self) -> str | None:
        try:
            name = (self.dir / ACTIVE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name or None

    def list(self) -> list[tuple[str, bool]]:
        """Every script as `(name, active)`, sorted by name."""
        if not self.dir.is_dir():
            return []
        active = self._active_name()
        names = sorted(
            p.name[: -len(SUFFIX)]
            for p in self.dir.iterdir()
            if p.name.endswith(SUFFIX) and not p.name.startswith(".")
        )
        return [(n, n == active) for n in names]

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def get(self, name: str) -> str:
        try:
            return self._path(name).read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise NoSuchScript(f"no script named {name!r}") from None

    def put(self, name: str, text: str) -> None:
        """Create or replace a script (the caller has compiled it)."""
        path = self._path(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text.encode("utf-8"), mode=0o600)

    def delete(self, name: str) -> None:
        path = self._path(name)
        if self._active_name() == name:
            raise ActiveScript(f"script {name!r} is active")
        try:
            path.unlink()
        except FileNotFoundError:
            raise NoSuchScript(f"no script named {name!r}") from None
        fsync_dir(self.dir)

    def rename(self, old: str, new: str) -> None:
        src, dst = self._path(old), self._path(new)
        if not src.is_file():
            raise NoSuchScript(f"no script named {old!r}")
        if dst.exists():
            raise ScriptExists(f"a script named {new!r} already exists")
        os.rename(src, dst)
        if self._active_name() == old:
            atomic_write(self.dir / ACTIVE, new.encode("utf-8"), mode=0o600)
        fsync_dir(self.dir)

    def set_active(self, name: str | None) -> None:
        """Make `name` the active script; None (or "") deactivates every script."""
        if not name:
            if (self.dir / ACTIVE).exists():
                (self.dir / ACTIVE).unlink()
                fsync_dir(self.dir)
            return
        if not self._path(name).is_file():
            raise NoSuchScript(f"no script named {name!r}")
        atomic_write(self.dir / ACTIVE, name.encode("utf-8"), mode=0o600)

    def active(self) -> tuple[str, str] | None:
        """The active script as `(name, text)`, or None."""
        name = self._active_name()
        if name is None:
            return None
        try:
            return name, self.get(name)
        except (NoSuchScript, ScriptStoreError):
            return None

    def include_loader(self, global_dir: Path | None = None) -> Callable[[str, bool], str | None]:
        """A loader for `include` (RFC 6609): `:personal` names are this user's scripts, `:global` ones
        `global_dir/NAME.sieve`. For `compile_script(include_loader=...)` and the interpreter's host."""

        def load(name: str, personal: bool) -> str | None:
            if personal:
                try:
                    return self.get(name)
                except ScriptStoreError:
                    return None
            if global_dir is None:
                return None
            try:
                return (global_dir / (check_name(name) + SUFFIX)).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError, ScriptStoreError):
                return None

        return load

    def size_used(self) -> int:
        """Bytes taken by every script."""
        return sum(len(self.get(n).encode("utf-8")) for n, _ in self.list())
