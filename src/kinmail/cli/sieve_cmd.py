"""`kinmail sieve check FILE`: compile a Sieve script and print every problem as `line:column: message`.

Exit status 0 when the script compiles, 1 when it does not (or cannot be read). Needs no configuration and
touches nothing on disk.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kinmail.core.errors import KinmailError


@click.group()
def sieve() -> None:
    """Sieve filters."""


@sieve.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Compile FILE; print errors as line:column: message."""
    from kinmail.sieve import SieveError, compile_script

    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise KinmailError(f"{file}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        click.echo(f"1:1: the script is not valid UTF-8 (byte {exc.start})")
        sys.exit(1)
    try:
        script = compile_script(text, name=file.stem)
    except SieveError as exc:
        for line, column, message in sorted(exc.errors, key=lambda e: (e[0], e[1])):
            click.echo(f"{line}:{column}: {message}")
        sys.exit(1)
    for line, column, message in script.warnings:
        click.echo(f"{line}:{column}: warning: {message}")
    click.echo(f"{file}: ok", err=True)


def register(group: click.Group) -> None:
    group.add_command(sieve)
