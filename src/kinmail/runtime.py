"""The running server's shared state: configuration, directory of users and aliases, store, queue, auth, TLS.

`kinmail serve` builds one `Runtime` and hands it to every service. Services read `rt.config` and
`rt.directory` at each use (never copy them), so that `reload()` — which builds a new configuration and
directory and swaps them in only when both load without a problem — takes effect everywhere at once.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kinmail.config.directory import Directory
from kinmail.config.load import LoadedConfig, load_config
from kinmail.config.schema import Config
from kinmail.core.errors import ConfigError, KinmailError, Problem
from kinmail.core.log import get_logger
from kinmail.core.tlscert import server_context

if TYPE_CHECKING:
    from kinmail.auth.authenticator import Authenticator
    from kinmail.queue.spool import Queue
    from kinmail.store.store import Store

log = get_logger(__name__)


class Runtime:
    """Everything a service needs; one per `kinmail serve` process."""

    def __init__(self, loaded: LoadedConfig, directory: Directory) -> None:
        from kinmail.auth.authenticator import Authenticator
        from kinmail.queue.spool import Queue
        from kinmail.store.store import Store

        self.loaded = loaded
        self.directory = directory
        self.ssl_context: ssl.SSLContext | None = self._load_tls(loaded)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("queue", "mail", "index", "sieve", "state", "log"):
            (self.data_dir / sub).mkdir(exist_ok=True)
        self.store: Store = Store(self.data_dir / "mail", self.data_dir / "index")
        self.store.quota_for = self._quota_for
        self.auth: Authenticator = Authenticator(self)
        self.queue: Queue = Queue(self)
        self.reload_hooks: list[Callable[[], None]] = []

    @classmethod
    def load(cls, config_path: Path) -> Runtime:
        """Load config and directory; raises ConfigError listing every problem."""
        loaded = load_config(config_path)
        directory = Directory.load(loaded)
        return cls(loaded, directory)

    def _quota_for(self, address: str) -> int | None:
        """The user's quota in bytes (from the users file, read at each call so that a reload applies)."""
        user = self.directory.users.get(address)
        return user.quota if user is not None else None

    @property
    def config(self) -> Config:
        return self.loaded.config

    @property
    def data_dir(self) -> Path:
        return self.loaded.data_dir

    @staticmethod
    def _load_tls(loaded: LoadedConfig) -> ssl.SSLContext | None:
        cert = loaded.resolve(loaded.config.tls.cert)
        key = loaded.resolve(loaded.config.tls.key)
        if not cert.exists() and not key.exists():
            log.warning("tls.missing", cert=str(cert), key=str(key))
            return None
        return server_context(cert, key)

    def warn_about_scripts(self) -> None:
        """Log problems in the group's Sieve scripts. They do not stop a start or a reload: the scripts are read
        at each delivery, and a broken one delivers to INBOX and tells the user (`kinmail check` lists them)."""
        from kinmail.delivery.filtering import check_scripts

        for problem in check_scripts(self.loaded):
            log.warning("sieve.script_problem", location=problem.location, reason=problem.message)

    def reload(self) -> list[Problem]:
        """Re-read config, users, aliases and maps. On any problem keep the running state and return them."""
        try:
            loaded = load_config(self.loaded.path)
            directory = Directory.load(loaded)
            ssl_context = self._load_tls(loaded)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload.failed", location=problem.location, reason=problem.message)
            return exc.problems
        except KinmailError as exc:
            log.error("reload.failed", reason=str(exc))
            return [Problem(str(self.loaded.path), str(exc))]
        self.loaded, self.directory, self.ssl_context = loaded, directory, ssl_context
        self.warn_about_scripts()
        for hook in self.reload_hooks:
            hook()
        log.info("reload.done", users=len(directory.users), domains=len(loaded.config.domains))
        return []
