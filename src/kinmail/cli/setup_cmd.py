"""`kinmail init` (a fresh, commented set-up) and `kinmail check` (every problem of a set-up at once).

`init` writes, in the folder of `--config`: `kinmail.toml` (every key with its default, commented out, from
the schema), empty `users` (mode 0600) and `aliases`, `sieve/global.sieve` (a commented example), a
self-signed certificate under `tls/`, DKIM keys under `dkim/` for each domain, and the data folders. It never
overwrites a file that exists.

`check` loads `kinmail.toml`, `users`, `aliases`, every map, the certificate and the Sieve scripts of the
group, and prints each problem as `file:line: reason` or `file:key: reason` (exit 1), or a one-line summary
(exit 0).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import click

from kinmail.config.directory import Directory, map_keys
from kinmail.config.load import LoadedConfig, load_config
from kinmail.config.reference import render_toml
from kinmail.config.users import domain_problem, normalize_domain
from kinmail.config.validators import domain_name
from kinmail.core.atomic import atomic_write
from kinmail.core.errors import ConfigError, Problem, UsageError

DATA_FOLDERS = ("queue", "mail", "index", "sieve", "state", "log")

USERS_HEADER = """\
# kinmail users: one account a line, address:{SCHEME}hash[:quota=SIZE] (Dovecot passwd-file style).
# Add users with `kinmail user add alice@example.org`; Dovecot hashes can be pasted in as they are.
"""

ALIASES_HEADER = """\
# kinmail aliases, a Postfix virtual table: SOURCE TARGET, TARGET...
#   postmaster@example.org   alice@example.org
#   team@example.org         alice@example.org, bob@example.org
#   @example.org             alice@example.org          (catch-all; real users still get their own mail)
# Add aliases with `kinmail alias add SOURCE TARGET...`.
"""

GLOBAL_SIEVE = """\
# The group's Sieve script (RFC 5228): it runs before each user's own filters.
# Everything here is a comment; remove the '#' of the lines you want. See `kinmail sieve check FILE`.
#
# require ["fileinto", "mailbox"];
#
# # File mail the spam filter marked into each user's Junk folder.
# if header :contains "X-Spam-Flag" "YES" {
#     fileinto :create "Junk";
#     stop;
# }
"""


def _default_domain(hostname: str) -> list[str]:
    labels = hostname.split(".")
    return [".".join(labels[1:])] if len(labels) >= 3 else []


def _write_new(path: Path, text: str, mode: int = 0o644) -> bool:
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, mode=mode)
    return True


@click.command()
@click.option("--hostname", help="This server's name (default: the machine's fully qualified name).")
@click.option("--domain", "domains", multiple=True, help="A domain to receive mail for (repeatable).")
@click.option(
    "--data-dir",
    help='Where mail and state live (default: /var/lib/kinmail for /etc/kinmail, else "data" beside the config).',
)
@click.pass_obj
def init(obj: object, hostname: str | None, domains: tuple[str, ...], data_dir: str | None) -> None:
    """Write a commented configuration, empty users and aliases, folders, a self-signed certificate and DKIM
    keys. Existing files are left alone."""
    config_path: Path = Path(obj.config_path).absolute()  # type: ignore[attr-defined]
    try:
        _init(config_path, hostname, domains, data_dir)
    except OSError as exc:  # a read-only folder, a full disk: one line, not a traceback
        raise UsageError(
            f"cannot write {exc.filename or config_path.parent}: {exc.strerror or exc}"
        ) from None


def _init(config_path: Path, hostname: str | None, domains: tuple[str, ...], data_dir: str | None) -> None:
    folder = config_path.parent
    if config_path.exists():
        raise UsageError(f"{config_path} already exists; edit it, or run `kinmail check`")
    try:
        host = domain_name(hostname or socket.getfqdn())
    except ValueError as exc:
        raise UsageError(f"--hostname: {exc}") from None
    wanted: list[str] = []
    for name in domains or _default_domain(host):
        name = normalize_domain(name)
        problem = domain_problem(name)
        if problem:
            raise UsageError(f"--domain: {problem}")
        if name not in wanted:
            wanted.append(name)
    if data_dir is None:
        data_dir = "/var/lib/kinmail" if folder == Path("/etc/kinmail") else "data"
    folder.mkdir(parents=True, exist_ok=True)
    text = render_toml(
        {"hostname": host, "data_dir": data_dir, "domains": wanted},
        header=f"Written by `kinmail init` for {host}.",
    )
    atomic_write(config_path, text)
    loaded = load_config(config_path)
    made = [config_path.name]
    users_path = loaded.resolve(loaded.config.users_file)
    if _write_new(users_path, USERS_HEADER, mode=0o600):
        made.append(users_path.name)
    if _write_new(loaded.resolve(loaded.config.aliases_file), ALIASES_HEADER):
        made.append(loaded.config.aliases_file)
    if _write_new(loaded.resolve(loaded.config.sieve.global_script), GLOBAL_SIEVE):
        made.append(loaded.config.sieve.global_script)
    for sub in DATA_FOLDERS:
        (loaded.data_dir / sub).mkdir(parents=True, exist_ok=True)
    made.append(f"{data_dir}/")
    cert, key = loaded.resolve(loaded.config.tls.cert), loaded.resolve(loaded.config.tls.key)
    if not cert.exists() and not key.exists():
        from kinmail.core.tlscert import make_self_signed

        make_self_signed(host, cert, key)
        made.append("a self-signed certificate")
    if wanted:
        from kinmail.mailauth.dkimkeys import create_keys

        for name in wanted:
            create_keys(folder / "dkim", name)
        made.append("DKIM keys")
    click.echo(f"wrote {', '.join(made)} in {folder}")
    click.echo("next: `kinmail user add ADDRESS`, `kinmail dns` for the DNS records, then `kinmail serve`")


# --- check ------------------------------------------------------------------------------------------------


def _expired(cert: Path) -> str | None:
    """Why the first certificate in `cert` is not valid now, or None (also None when it cannot be parsed:
    loading it says why)."""
    import datetime

    from cryptography import x509

    try:
        first = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None
    now = datetime.datetime.now(datetime.UTC)
    if first.not_valid_after_utc < now:
        return f"{cert} expired on {first.not_valid_after_utc:%Y-%m-%d}"
    if first.not_valid_before_utc > now:
        return f"{cert} is not valid before {first.not_valid_before_utc:%Y-%m-%d}"
    return None


def _check_tls(loaded: LoadedConfig) -> list[Problem]:
    name = loaded.path.name
    cert, key = loaded.resolve(loaded.config.tls.cert), loaded.resolve(loaded.config.tls.key)
    problems = []
    for what, path in (("tls.cert", cert), ("tls.key", key)):
        if not path.exists():
            problems.append(Problem(f"{name}:{what}", f"{path} does not exist (`kinmail init` makes one)"))
        elif not path.is_file():
            problems.append(Problem(f"{name}:{what}", f"{path} is not a file"))
    if problems:
        return problems
    expired = _expired(cert)
    if expired:
        return [Problem(f"{name}:tls.cert", expired)]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:
        return [Problem(f"{name}:tls.cert", f"cannot read {cert} or {key}: {exc.strerror or exc}")]
    except ssl.SSLError as exc:
        return [
            Problem(
                f"{name}:tls.cert", f"{cert} and {key} are not a usable certificate and key: {exc.reason}"
            )
        ]
    return []


def _check_data_dir(loaded: LoadedConfig) -> list[Problem]:
    data_dir = loaded.data_dir
    probe = data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    import os

    if not os.access(probe, os.W_OK):
        return [Problem(f"{loaded.path.name}:data_dir", f"{data_dir} cannot be written by this user")]
    return []


_DIRECTORY_KEYS = ("domains", "users_file", "aliases_file", "delivery")


def _directory_despite(config_path: Path, problems: list[Problem]) -> list[Problem]:
    """The users and aliases problems too when kinmail.toml has mistakes elsewhere (the keys that users and
    aliases depend on must be valid themselves)."""
    import tomllib

    from kinmail.config.schema import Config

    try:
        data = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    bad = {p.location.partition(":")[2].split(".")[0] for p in problems}
    if bad & set(_DIRECTORY_KEYS):
        return []
    try:
        config = Config.model_validate({key: data[key] for key in _DIRECTORY_KEYS if key in data})
    except ValueError:
        return []
    loaded = LoadedConfig(Path(config_path).absolute(), config)
    users_path = loaded.resolve(config.users_file)
    aliases_path = loaded.resolve(config.aliases_file)
    found: list[Problem] = []
    try:
        users_text = users_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Problem(str(users_path), f"cannot read: {exc}")]
    try:
        aliases_text = aliases_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        aliases_text = ""
    except (OSError, UnicodeDecodeError) as exc:
        found.append(Problem(str(aliases_path), f"cannot read: {exc}"))
        aliases_text = ""
    _directory, more = Directory.from_texts(
        loaded, users_text, aliases_text, users_path.name, aliases_path.name, open_maps=False
    )
    return found + more


def collect_problems(config_path: Path) -> tuple[list[Problem], str]:
    """Every problem of the set-up, and a one-line summary when there are none."""
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        return exc.problems + _directory_despite(config_path, exc.problems), ""
    problems: list[Problem] = []
    directory: Directory | None = None
    try:
        directory = Directory.load(loaded)
    except ConfigError as exc:
        problems.extend(exc.problems)
    problems += _check_tls(loaded)
    from kinmail.delivery.filtering import check_scripts  # the Sieve compiler: only `check` needs it

    problems += check_scripts(loaded)
    problems += _check_data_dir(loaded)
    if problems or directory is None:
        return problems, ""
    config = loaded.config
    summary = (
        f"{loaded.path}: fine — {config.hostname}, {len(config.domains)} domain(s), "
        f"{len(directory.users)} user(s), {len(directory.aliases)} alias(es), {len(map_keys(config))} map(s)"
    )
    return [], summary


@click.command()
@click.pass_obj
def check(obj: object) -> None:
    """Validate the configuration, users, aliases, maps, certificate and Sieve scripts; print every problem."""
    problems, summary = collect_problems(obj.config_path)  # type: ignore[attr-defined]
    if problems:
        for problem in problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(problems)} problem(s) found", err=True)
        raise SystemExit(1)
    click.echo(summary)


def register(group: click.Group) -> None:
    group.add_command(init)
    group.add_command(check)
