"""The directory: our domains, the users, the aliases and the maps named in the configuration.

`Directory.load(loaded)` reads `users_file` and `aliases_file` (a missing aliases file is an empty table) and
opens every map the configuration names, collecting every problem (`users:3: ...`, `aliases:7: ...`,
`kinmail.toml:smtpd.client_access: ...`) into one ConfigError. `resolve(address)` follows Postfix's virtual(5)
semantics with one deliberate difference: a catch-all `@domain` never hides a real user.

Lookup order for `user+tag@domain` at one of our domains:
  1. aliases `user+tag@domain`, `user@domain`, `user+tag`, `user` (virtual(5) ADDRESS EXTENSION; the tag is
     carried to the local recipients of an alias found without it);
  2. the user `user+tag@domain`, then the user `user@domain` with the tag kept in `Recipient.tag`;
  3. the catch-all `@domain`.
Targets are expanded recursively; a target equal to the address being expanded is that address's own
mailbox (a forward that keeps a copy); remote targets are forwards.

Built by `Runtime.load`/`Runtime.reload`, `kinmail check` and the CLI. Reads config files; writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kinmail.config.aliases import AliasTable, parse_aliases
from kinmail.config.load import LoadedConfig
from kinmail.config.maps import Map, open_map, split_address
from kinmail.config.schema import Config
from kinmail.config.users import UserDB, canonical_address, normalize_domain, parse_users
from kinmail.core.errors import ConfigError, Problem

MAX_DEPTH = 100
_FILE_LINE = re.compile(r"^[^:]+:\d+$")


@dataclass(frozen=True)
class Recipient:
    """Where a message for one address goes: a local mailbox (`local=True`) or a remote address.

    `tag` is the `+tag` of `user+tag@domain` when the mailbox was found without it; `original` is the
    address as it was given to `resolve` (for Delivered-To and DSN ORCPT)."""

    address: str
    local: bool
    tag: str | None = None
    original: str = ""


class SenderAddresses(set[str]):
    """The addresses a user may send as; `in` ignores case and also accepts each one with a `+tag` (as
    Postfix's smtpd_sender_login_maps lookups strip the extension)."""

    def __init__(self, addresses: set[str], delimiter: str) -> None:
        super().__init__(canonical_address(a) for a in addresses)
        self.delimiter = delimiter

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str):
            return False
        address = canonical_address(item)
        if set.__contains__(self, address):
            return True
        user, tag, domain, _sep = split_address(address, self.delimiter)
        return tag is not None and bool(domain) and set.__contains__(self, f"{user}@{domain}")


class _Nowhere(Exception):
    pass


class _Loop(Exception):
    pass


def map_keys(config: Config) -> list[tuple[str, str]]:
    """(`section.key`, spec) of every non-empty map spec in the configuration.

    A map key is a string whose name ends in `_access`, `_map`, `_maps` or `_credentials`, a list of strings
    whose name ends in `_maps`, or a table of strings whose name ends in `lists` or `_maps` (e.g. sieve.lists)."""
    found: list[tuple[str, str]] = []
    for section_name in type(config).model_fields:
        section = getattr(config, section_name)
        if not hasattr(type(section), "model_fields"):
            continue
        for key in type(section).model_fields:
            value = getattr(section, key)
            where = f"{section_name}.{key}"
            if (
                isinstance(value, str)
                and value
                and key.endswith(("_access", "_map", "_maps", "_credentials"))
            ):
                found.append((where, value))
            elif isinstance(value, list) and key.endswith("_maps"):
                found.extend((where, v) for v in value if isinstance(v, str) and v)
            elif isinstance(value, dict) and key.endswith(("lists", "_maps")):
                found.extend((f"{where}.{k}", v) for k, v in value.items() if isinstance(v, str) and v)
    return found


class Directory:
    """Domains, users, aliases and maps of one configuration (replaced as a whole on reload)."""

    def __init__(self, loaded: LoadedConfig, users: UserDB, aliases: AliasTable) -> None:
        self.loaded = loaded
        self.domains: frozenset[str] = frozenset(normalize_domain(d) for d in loaded.config.domains)
        self.users = users
        self.aliases = aliases
        self.delimiter = loaded.config.delivery.recipient_delimiter
        self._maps: dict[str, Map] = {}
        self._senders: dict[str, set[str]] | None = None

    # --- loading -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, loaded: LoadedConfig) -> Directory:
        """Read users, aliases and maps; raise ConfigError listing every problem."""
        config = loaded.config
        problems: list[Problem] = []
        users_path = loaded.resolve(config.users_file)
        users_text = _read(users_path, missing_ok=False, problems=problems)
        aliases_path = loaded.resolve(config.aliases_file)
        aliases_text = _read(aliases_path, missing_ok=True, problems=problems)
        directory, more = cls.from_texts(
            loaded, users_text or "", aliases_text or "", users_path.name, aliases_path.name
        )
        problems.extend(more)
        if problems:
            raise ConfigError(problems)
        return directory

    @classmethod
    def from_texts(
        cls,
        loaded: LoadedConfig,
        users_text: str,
        aliases_text: str,
        users_name: str = "users",
        aliases_name: str = "aliases",
        open_maps: bool = True,
    ) -> tuple[Directory, list[Problem]]:
        """A directory from the texts of the users and aliases files, and every problem found (the CLI checks
        an edit this way before writing it)."""
        config = loaded.config
        domains = frozenset(normalize_domain(d) for d in config.domains)
        problems: list[Problem] = []
        user_list, user_problems = parse_users(users_text, users_name, domains)
        problems.extend(user_problems)
        alias_list, alias_problems = parse_aliases(aliases_text, aliases_name, domains)
        problems.extend(alias_problems)
        directory = cls(loaded, UserDB(user_list), AliasTable(alias_list))
        problems.extend(directory.check_aliases(aliases_name))
        for where, spec in map_keys(config) if open_maps else []:
            try:
                directory.map(spec)
            except ConfigError as exc:
                for problem in exc.problems:
                    if problem.location not in (spec, "(map)") and _FILE_LINE.match(problem.location):
                        problems.append(problem)
                        continue
                    message = problem.message
                    if problem.location not in (spec, "(map)"):
                        message = f"{problem.location}: {message}"
                    problems.append(Problem(f"{loaded.path.name}:{where}", message))
        return directory, problems

    def check_aliases(self, name: str) -> list[Problem]:
        """Targets that point nowhere local and loops, located at the alias line."""
        problems: list[Problem] = []
        for alias in self.aliases:
            for target in alias.targets:
                target = _rewrite(target, alias.source)
                if target.startswith("@") or not self.is_local_domain(target.rpartition("@")[2]):
                    continue
                try:
                    if target == alias.source:
                        if target not in self.users:
                            raise _Nowhere(target)
                        continue
                    self._expand(target, (alias.source,), strict=True)
                except _Nowhere as exc:
                    problems.append(
                        Problem(
                            f"{name}:{alias.line}", f"target {exc} points nowhere (no such user or alias)"
                        )
                    )
                except _Loop as exc:
                    problems.append(Problem(f"{name}:{alias.line}", f"alias loop: {exc}"))
        return problems

    # --- queries -------------------------------------------------------------------------------------------
    def is_local_domain(self, domain: str) -> bool:
        return normalize_domain(domain) in self.domains

    def resolve(self, address: str) -> list[Recipient] | None:
        """Where mail for `address` goes; None when the domain is ours but nobody has that address."""
        address = canonical_address(address.strip().strip("<>"))
        local, at, domain = address.rpartition("@")
        if not at or not local:
            return None
        if not self.is_local_domain(domain):
            return [Recipient(address, local=False, original=address)]
        try:
            found = self._expand(address, (), strict=False)
        except (_Nowhere, _Loop):  # pragma: no cover - only raised when strict
            return None
        if not found:
            return None
        unique: dict[str, Recipient] = {}
        for recipient in found:
            unique.setdefault(
                recipient.address, Recipient(recipient.address, recipient.local, recipient.tag, address)
            )
        return list(unique.values())

    def sender_addresses(self, user: str) -> SenderAddresses:
        """The addresses `user` may send as: their own and every alias (not catch-all) that leads to them;
        `address in result` also accepts their `+tag` forms."""
        if self._senders is None:
            senders: dict[str, set[str]] = {}
            for alias in self.aliases:
                if alias.source.startswith("@"):
                    continue
                sources = (
                    [alias.source]
                    if "@" in alias.source
                    else [f"{alias.source}@{d}" for d in sorted(self.domains)]
                )
                for source in sources:
                    for recipient in self.resolve(source) or []:
                        if recipient.local:
                            senders.setdefault(recipient.address, set()).add(source)
            self._senders = senders
        user = canonical_address(user)
        return SenderAddresses({user, *self._senders.get(user, set())}, self.delimiter)

    def map(self, spec: str) -> Map:
        """The map for `spec`, opened once and re-read when its file changes; raises ConfigError."""
        table = self._maps.get(spec)
        if table is None:
            table = open_map(spec, self.loaded.dir)
            self._maps[spec] = table
        return table

    # --- expansion -----------------------------------------------------------------------------------------
    def _split(self, address: str) -> tuple[str, str | None, str]:
        user, tag, domain, _sep = split_address(address, self.delimiter)
        return user, tag, domain

    def _alias_for(self, address: str) -> tuple[tuple[str, ...], str | None] | None:
        """The alias targets for `address` (catch-all excluded) and the tag to carry, virtual(5) order."""
        user, tag, domain = self._split(address)
        local = address.rpartition("@")[0]
        for key, carry in ((address, None), (f"{user}@{domain}", tag), (local, None), (user, tag)):
            targets = self.aliases.get(key)
            if targets is not None:
                return targets, carry
        return None

    def _expand_targets(
        self, address: str, targets: tuple[str, ...], carry: str | None, path: tuple[str, ...], strict: bool
    ) -> list[Recipient]:
        found: list[Recipient] = []
        for target in targets:
            target = _rewrite(target, address)
            if not self.is_local_domain(target.rpartition("@")[2]):
                found.append(Recipient(target, local=False))
                continue
            if target == address:
                if target in self.users:
                    found.append(Recipient(target, local=True, tag=carry))
                elif strict:
                    raise _Nowhere(target)
                continue
            sub = self._expand(target, (*path, address), strict)
            found.extend(
                Recipient(r.address, r.local, r.tag or carry) if r.local and carry else r for r in sub or []
            )
        return found

    def _expand(self, address: str, path: tuple[str, ...], strict: bool) -> list[Recipient] | None:
        if address in path or len(path) > MAX_DEPTH:
            if strict:
                raise _Loop(" → ".join((*path, address)))
            return []
        alias = self._alias_for(address)
        if alias is not None:
            return self._expand_targets(address, alias[0], alias[1], path, strict)
        if address in self.users:
            return [Recipient(address, local=True)]
        user, tag, domain = self._split(address)
        base = f"{user}@{domain}"
        if tag is not None and base in self.users:
            return [Recipient(base, local=True, tag=tag)]
        catch_all = self.aliases.get(f"@{domain}")
        if catch_all is not None:
            return self._expand_targets(address, catch_all, None, path, strict)
        if strict:
            raise _Nowhere(address)
        return None


def _rewrite(target: str, address: str) -> str:
    """virtual(5): a result `@otherdomain` is the same user in otherdomain."""
    if target.startswith("@"):
        return address.rpartition("@")[0] + target
    return target


def _read(path: Path, *, missing_ok: bool, problems: list[Problem]) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if not missing_ok:
            problems.append(Problem(str(path), "file not found"))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems.append(Problem(str(path), f"cannot read: {reason}"))
        return None
