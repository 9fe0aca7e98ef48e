"""Entry point of the `kinmail` command: global `--config`, the command groups, error handling.

A `KinmailError` (and `ConfigError`, which lists every problem) is printed without a traceback and exits 1;
click's usage errors exit 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import click

from kinmail.core.errors import ConfigError, KinmailError

DEFAULT_CONFIG = "/etc/kinmail/kinmail.toml"

# Modules that define `register(group: click.Group) -> None`.
COMMAND_MODULES = (
    "kinmail.cli.serve_cmd",
    "kinmail.cli.setup_cmd",
    "kinmail.cli.accounts_cmd",
    "kinmail.cli.queue_cmd",
    "kinmail.cli.sieve_cmd",
    "kinmail.cli.dns_cmd",
    "kinmail.cli.store_cmd",
)


class Context:
    """What every command gets: the path of the main config file."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for _name in COMMAND_MODULES:
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name).register(cli)


def fail(message: str) -> None:
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
    if isinstance(code, int) and code:
        sys.exit(code)
