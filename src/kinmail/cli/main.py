"""Entry point of the `kinmail` command: global `--config`, the command groups, error handling.

A `KinmailError` (and `ConfigError`, which lists every problem) is printed without a traceback and exits 1;
click's usage errors exit 2.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import NoReturn

import click

from kinmail.core.errors import ConfigError, KinmailError

DEFAULT_CONFIG = "/etc/kinmail/kinmail.toml"

# Each command and the module that defines it (through `register(group: click.Group) -> None`). Modules are
# imported only when one of their commands runs, so that `kinmail user add` does not load the DNS library.
COMMANDS = {
    "serve": "kinmail.cli.serve_cmd",
    "demo": "kinmail.cli.serve_cmd",
    "reload": "kinmail.cli.serve_cmd",
    "init": "kinmail.cli.setup_cmd",
    "check": "kinmail.cli.setup_cmd",
    "domain": "kinmail.cli.accounts_cmd",
    "user": "kinmail.cli.accounts_cmd",
    "alias": "kinmail.cli.accounts_cmd",
    "map": "kinmail.cli.accounts_cmd",
    "queue": "kinmail.cli.queue_cmd",
    "sieve": "kinmail.cli.sieve_cmd",
    "dns": "kinmail.cli.dns_cmd",
    "index": "kinmail.cli.store_cmd",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(COMMANDS[cmd_name]).register(self)
        return self.commands.get(cmd_name)


class Context:
    """What every command gets: the path of the main config file."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="KINMAIL_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The main config file (or KINMAIL_CONFIG).",
)
@click.version_option(package_name="kinmail")
@click.pass_context
def cli(ctx: click.Context, config_path: Path) -> None:
    """kinmail: a complete mail server for a small group, configured by a few text files."""
    ctx.obj = Context(config_path)


def fail(message: str) -> NoReturn:
    click.echo(f"kinmail: {message}", err=True)
    sys.exit(1)


def main() -> None:
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    except KinmailError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or exc}")
    if isinstance(code, int) and code:
        sys.exit(code)
