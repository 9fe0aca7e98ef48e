"""`kinmail domain|user|alias ...` and `kinmail map query`: edit the domains list, the `users` and `aliases`
files, and show what a map lookup gives.

Every edit is checked the way `kinmail check` would check it before it is written (a bad address, an unknown
domain, a duplicate user or an alias left pointing nowhere is refused with one line), written atomically
keeping the file's comments and order, and followed by a SIGHUP to a running server. Edits take a lock
(`.kinmail-edit.lock` beside kinmail.toml) so that two at once cannot lose each other's change. Writes
`kinmail.toml`, `users` (mode 0600), `aliases` and, for a new domain, its DKIM keys under `<config dir>/dkim/`.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec

import click
from rich.console import Console
from rich.table import Table

from kinmail.config import edit
from kinmail.config.aliases import alias_key, split_targets, target_problem
from kinmail.config.directory import Directory
from kinmail.config.load import LoadedConfig, load_config, parse_config
from kinmail.config.maps import lookup_address, open_map
from kinmail.config.users import (
    address_problem,
    canonical_address,
    domain_problem,
    format_size,
    normalize_domain,
    parse_size,
)
from kinmail.core.atomic import atomic_write
from kinmail.core.errors import ConfigError, Problem, UsageError


def _loaded(obj: object) -> LoadedConfig:
    return load_config(obj.config_path)  # type: ignore[attr-defined]


P = ParamSpec("P")


def _locked(command: Callable[Concatenate[object, P], None]) -> Callable[Concatenate[object, P], None]:
    """Run an editing command under the edit lock of its config folder."""

    def run(obj: object, /, *args: P.args, **kwargs: P.kwargs) -> None:
        with edit.edit_lock(obj.config_path):  # type: ignore[attr-defined]
            command(obj, *args, **kwargs)

    functools.update_wrapper(run, command)
    return run


def _paths(loaded: LoadedConfig) -> tuple[Path, Path]:
    return loaded.resolve(loaded.config.users_file), loaded.resolve(loaded.config.aliases_file)


def _messages(problems: list[Problem]) -> set[str]:
    return {p.message for p in problems}


def _commit(loaded: LoadedConfig, *, users: str | None = None, aliases: str | None = None) -> Directory:
    """Check the edited texts; write them when they add no problem; tell a running server. Returns the new
    directory."""
    users_path, aliases_path = _paths(loaded)
    old_users = edit.read_text(users_path)
    old_aliases = edit.read_text(aliases_path)
    _before, old_problems = Directory.from_texts(
        loaded, old_users, old_aliases, users_path.name, aliases_path.name, open_maps=False
    )
    directory, problems = Directory.from_texts(
        loaded,
        old_users if users is None else users,
        old_aliases if aliases is None else aliases,
        users_path.name,
        aliases_path.name,
        open_maps=False,
    )
    new = [p for p in problems if p.message not in _messages(old_problems)]
    if new:
        raise UsageError(f"refused, it would leave {new[0]}")
    if users is not None:
        _write(users_path, users, mode=0o600)
    if aliases is not None:
        _write(aliases_path, aliases)
    _notify(loaded)
    return directory


def _write(path: Path, text: str, mode: int | None = None) -> None:
    """Write atomically; a full disk or a read-only folder is one line, not a traceback."""
    try:
        atomic_write(path, text, mode=mode)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _notify(loaded: LoadedConfig) -> None:
    pid = edit.notify_server(loaded)
    if pid is not None:
        click.echo(f"asked the running server (pid {pid}) to reload", err=True)


def _directory(loaded: LoadedConfig) -> Directory:
    users_path, aliases_path = _paths(loaded)
    directory, _problems = Directory.from_texts(
        loaded,
        edit.read_text(users_path),
        edit.read_text(aliases_path),
        users_path.name,
        aliases_path.name,
        open_maps=False,
    )
    return directory


def _address(loaded: LoadedConfig, address: str) -> str:
    address = canonical_address(address)
    problem = address_problem(address)
    if problem:
        raise UsageError(problem)
    domain = address.rpartition("@")[2]
    if domain not in loaded.config.domains:
        raise UsageError(f"unknown domain {domain!r}: add it first with `kinmail domain add {domain}`")
    return address


def _console() -> Console:
    return Console(width=max(100, Console().width))


# --- domain -----------------------------------------------------------------------------------------------


@click.group()
def domain() -> None:
    """List, add or remove the domains we receive mail for."""


@domain.command("list")
@click.pass_obj
def domain_list(obj: object) -> None:
    """Our domains, with how many users and aliases each has."""
    loaded = _loaded(obj)
    directory = _directory(loaded)
    table = Table("Domain", "Users", "Aliases")
    for name in loaded.config.domains:
        users = sum(1 for u in directory.users if u.domain == name)
        aliases = sum(1 for a in directory.aliases if a.source.rpartition("@")[2] == name)
        table.add_row(name, str(users), str(aliases))
    if not loaded.config.domains:
        click.echo("no domains yet: add one with `kinmail domain add NAME`", err=True)
        return
    _console().print(table)


def _write_domains(loaded: LoadedConfig, domains: list[str]) -> None:
    text = loaded.path.read_text(encoding="utf-8")
    new_text = edit.set_domains(text, domains)
    try:
        parse_config(new_text, loaded.path.name)
    except ConfigError as exc:
        raise UsageError(str(exc.problems[0])) from None
    _write(loaded.path, new_text)


def _make_dkim_keys(loaded: LoadedConfig, name: str) -> None:
    from kinmail.mailauth.dkimkeys import create_keys  # cryptography: loaded only when a domain is added

    create_keys(loaded.dir / "dkim", name)


@domain.command("add")
@click.argument("name")
@click.pass_obj
@_locked
def domain_add(obj: object, name: str) -> None:
    """Add NAME to `domains` (and make its DKIM keys)."""
    loaded = _loaded(obj)
    name = normalize_domain(name)
    problem = domain_problem(name)
    if problem:
        raise UsageError(problem)
    if name in loaded.config.domains:
        raise UsageError(f"{name} is already one of our domains")
    _write_domains(loaded, [*loaded.config.domains, name])
    _make_dkim_keys(loaded, name)
    click.echo(f"added {name}; `kinmail dns {name}` shows the DNS records to publish")
    _notify(loaded)


@domain.command("remove")
@click.argument("name")
@click.pass_obj
@_locked
def domain_remove(obj: object, name: str) -> None:
    """Remove NAME from `domains` (refused while users or aliases use it)."""
    loaded = _loaded(obj)
    name = normalize_domain(name)
    if name not in loaded.config.domains:
        raise UsageError(f"{name} is not one of our domains")
    directory = _directory(loaded)
    users = [u.address for u in directory.users if u.domain == name]
    aliases = [a.source for a in directory.aliases if a.source.rpartition("@")[2] == name]
    if users or aliases:
        raise UsageError(
            f"{name} still has {len(users)} user(s) and {len(aliases)} alias(es): remove them first"
        )
    _write_domains(loaded, [d for d in loaded.config.domains if d != name])
    click.echo(f"removed {name}")
    _notify(loaded)


# --- user -------------------------------------------------------------------------------------------------


@click.group()
def user() -> None:
    """List, add, remove users or change a password."""


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        raise UsageError("no terminal to ask for the password on: pass it with --password-stdin")
    if not password:
        raise UsageError("the password is empty")
    return password


def _quota(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return format_size(parse_size(text))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _existing_user(loaded: LoadedConfig, address: str) -> tuple[str, str]:
    """The canonical form of a user's `address` and the text of the users file; refuses an unknown user."""
    address = canonical_address(address)
    text = edit.read_text(_paths(loaded)[0])
    if address not in _directory(loaded).users:
        raise UsageError(f"no such user: {address}")
    return address, text


@user.command("add")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--quota", metavar="SIZE", help="Mailbox quota such as 500M or 2G.")
@click.pass_obj
@_locked
def user_add(obj: object, address: str, password_stdin: bool, quota: str | None) -> None:
    """Add a user; asks for the password twice on a terminal."""
    from kinmail.auth.passwords import hash_password

    loaded = _loaded(obj)
    address = _address(loaded, address)
    users_path, _ = _paths(loaded)
    text = edit.read_text(users_path)
    if address in _directory(loaded).users:
        raise UsageError(f"{address} already exists (use `kinmail user passwd` to change the password)")
    size = _quota(quota)
    password = _read_password(password_stdin)
    line = f"{address}:{hash_password(password)}" + (f":quota={size}" if size else "")
    _commit(loaded, users=edit.add_user(text, line))
    click.echo(f"added {address}")


@user.command("passwd")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_obj
@_locked
def user_passwd(obj: object, address: str, password_stdin: bool) -> None:
    """Set a new password for a user."""
    from kinmail.auth.passwords import hash_password

    loaded = _loaded(obj)
    address, text = _existing_user(loaded, address)
    password = _read_password(password_stdin)
    _commit(loaded, users=edit.replace_user_field(text, address, 1, hash_password(password)))
    click.echo(f"changed the password of {address}")


@user.command("quota")
@click.argument("address")
@click.argument("size")
@click.pass_obj
@_locked
def user_quota(obj: object, address: str, size: str) -> None:
    """Set a user's quota (SIZE such as 2G; 0 for none)."""
    loaded = _loaded(obj)
    address, text = _existing_user(loaded, address)
    value = None if size.strip() in ("0", "none") else _quota(size)
    _commit(loaded, users=edit.set_user_extra(text, address, "quota", value))
    click.echo(f"quota of {address}: {value or 'none'}")


@user.command("list")
@click.option("--plain", is_flag=True, help="One address a line, nothing else.")
@click.pass_obj
def user_list(obj: object, plain: bool) -> None:
    """The users, with quota, password scheme and the aliases that lead to them."""
    from kinmail.auth.passwords import split_scheme

    loaded = _loaded(obj)
    directory = _directory(loaded)
    if plain:
        for account in directory.users:
            click.echo(account.address)
        return
    table = Table("User", "Quota", "Password", "Also receives as")
    for account in directory.users:
        also = sorted(directory.sender_addresses(account.address) - {account.address})
        scheme = split_scheme(account.password)[0] if account.password else "(login disabled)"
        quota = format_size(account.quota) if account.quota else "-"
        table.add_row(account.address, quota, scheme, ", ".join(also))
    if not len(directory.users):
        click.echo("no users yet: add one with `kinmail user add ADDRESS`", err=True)
        return
    _console().print(table)


@user.command("remove")
@click.argument("address")
@click.pass_obj
@_locked
def user_remove(obj: object, address: str) -> None:
    """Remove a user (their mail stays on disk)."""
    loaded = _loaded(obj)
    address = canonical_address(address)
    users_path, _ = _paths(loaded)
    new_text = edit.remove_user(edit.read_text(users_path), address)
    sources = [a.source for a in _directory(loaded).aliases if address in a.targets]
    if sources:
        raise UsageError(
            f"{address} still receives mail for {', '.join(sources)}: change those aliases first"
            " (`kinmail alias remove SOURCE TARGET`)"
        )
    _commit(loaded, users=new_text)
    local, _, domain_name = address.rpartition("@")
    click.echo(f"removed {address}; their mail stays in {loaded.data_dir / 'mail' / domain_name / local}")


# --- alias ------------------------------------------------------------------------------------------------


@click.group()
def alias() -> None:
    """List, add or remove aliases (a Postfix virtual table)."""


def _source(loaded: LoadedConfig, source: str) -> str:
    source = alias_key(source)
    if source.startswith("@"):
        name = source[1:]
        if domain_problem(name):
            raise UsageError(f"{source!r} is not @domain")
        if name not in loaded.config.domains:
            raise UsageError(f"unknown domain {name!r}: add it first with `kinmail domain add {name}`")
        return source
    return _address(loaded, source)


@alias.command("add")
@click.argument("source")
@click.argument("targets", nargs=-1, required=True)
@click.pass_obj
@_locked
def alias_add(obj: object, source: str, targets: tuple[str, ...]) -> None:
    """Send mail for SOURCE (user@domain, or @domain for a catch-all) to TARGETs; adds to an existing alias."""
    loaded = _loaded(obj)
    source = _source(loaded, source)
    wanted = [alias_key(t) for text in targets for t in split_targets(text)]
    for target in wanted:
        problem = target_problem(target)
        if problem:
            raise UsageError(problem)
    _, aliases_path = _paths(loaded)
    text = edit.read_text(aliases_path)
    existing = list(_directory(loaded).aliases.get(source) or ())
    merged = list(dict.fromkeys([*existing, *wanted]))
    if merged == existing:
        raise UsageError(f"{source} already goes to {', '.join(wanted)}")
    _commit(loaded, aliases=edit.set_alias(text, source, merged))
    click.echo(f"{source} → {', '.join(merged)}")


@alias.command("remove")
@click.argument("source")
@click.argument("targets", nargs=-1)
@click.pass_obj
@_locked
def alias_remove(obj: object, source: str, targets: tuple[str, ...]) -> None:
    """Remove the alias SOURCE, or only the given TARGETs from it."""
    loaded = _loaded(obj)
    source = alias_key(source)
    _, aliases_path = _paths(loaded)
    text = edit.read_text(aliases_path)
    existing = list(_directory(loaded).aliases.get(source) or ())
    if not existing:
        raise UsageError(f"no such alias: {source}")
    drop = [alias_key(t) for text_ in targets for t in split_targets(text_)]
    missing = [t for t in drop if t not in existing]
    if missing:
        raise UsageError(f"{source} does not go to {', '.join(missing)}")
    left = [t for t in existing if t not in drop] if drop else []
    new_text = edit.set_alias(text, source, left) if left else edit.remove_alias(text, source)
    _commit(loaded, aliases=new_text)
    click.echo(f"{source} → {', '.join(left)}" if left else f"removed {source}")


@alias.command("list")
@click.pass_obj
def alias_list(obj: object) -> None:
    """The aliases and where each leads."""
    loaded = _loaded(obj)
    directory = _directory(loaded)
    table = Table("Alias", "Targets")
    for entry in directory.aliases:
        table.add_row(entry.source, ", ".join(entry.targets))
    if not len(directory.aliases):
        click.echo("no aliases yet: add one with `kinmail alias add SOURCE TARGET`", err=True)
        return
    _console().print(table)


# --- map --------------------------------------------------------------------------------------------------


@click.group("map")
def map_group() -> None:
    """Query Postfix-style lookup tables."""


@map_group.command("query")
@click.argument("spec")
@click.argument("key")
@click.option(
    "--address",
    "as_address",
    is_flag=True,
    help="Search an address as virtual(5) does (user+ext@domain, ...).",
)
@click.pass_obj
def map_query(obj: object, spec: str, key: str, as_address: bool) -> None:
    """Print what looking KEY up in the map SPEC gives, like `postmap -q`; exit 1 when nothing is found.

    Relative file names resolve against the config folder (or the current folder without a config)."""
    config_path: Path = obj.config_path  # type: ignore[attr-defined]
    base = config_path.parent if config_path.exists() else Path.cwd()
    delimiter = "+"
    if config_path.exists():
        # A query still answers while the config has mistakes (`kinmail check` names them).
        with contextlib.suppress(ConfigError):
            delimiter = load_config(config_path).config.delivery.recipient_delimiter
    table = open_map(spec, base)
    value = lookup_address(table, key, delimiter) if as_address else table.lookup(key)
    if value is None:
        sys.exit(1)
    click.echo(value)


def register(group: click.Group) -> None:
    group.add_command(domain)
    group.add_command(user)
    group.add_command(alias)
    group.add_command(map_group)
