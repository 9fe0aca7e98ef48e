"""`kinmail serve`, `kinmail demo` and `kinmail reload`."""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

import click

from kinmail.core.errors import KinmailError

DEMO_PORTS = {
    "smtp": 2525,
    "submission": 2587,
    "submissions": 2465,
    "imap": 2143,
    "imaps": 2993,
    "pop3": 2110,
    "pop3s": 2995,
    "managesieve": 24190,
}


@click.command()
@click.pass_obj
def serve(obj: object) -> None:
    """Run every service in the foreground until SIGTERM; SIGHUP reloads."""
    from kinmail.serve import serve as run_server

    run_server(obj.config_path)  # type: ignore[attr-defined]


@click.command()
@click.option("--dir", "demo_dir", default="var/demo", show_default=True, type=click.Path(path_type=Path))
def demo(demo_dir: Path) -> None:
    """A throw-away server on high ports in ./var/demo; prints how to log in."""
    from kinmail.ops.demo import prepare_demo
    from kinmail.serve import serve as run_server

    config_path, user, password = prepare_demo(demo_dir.resolve(), DEMO_PORTS, secrets.token_urlsafe(9))
    p = DEMO_PORTS
    click.echo(
        f"""
kinmail demo — domain example.test, data in {demo_dir}/

  user      {user}
  password  {password}

  IMAP        127.0.0.1:{p["imap"]} (STARTTLS) or {p["imaps"]} (TLS)   — self-signed certificate
  POP3        127.0.0.1:{p["pop3"]} (STLS) or {p["pop3s"]} (TLS)
  SMTP in     127.0.0.1:{p["smtp"]}
  Submission  127.0.0.1:{p["submission"]} (STARTTLS) or {p["submissions"]} (TLS), log in as above
  ManageSieve 127.0.0.1:{p["managesieve"]}

  Try:  swaks --server 127.0.0.1:{p["smtp"]} --to {user} --from friend@example.com
        curl -k --user '{user}:{password}' imaps://127.0.0.1:{p["imaps"]}/INBOX -X 'FETCH 1 BODY[]'

Ctrl-C stops.
""",
        err=True,
    )
    run_server(config_path)


@click.command()
@click.pass_obj
def reload(obj: object) -> None:
    """Ask the running server to re-read config, users, aliases and maps."""
    from kinmail.config.load import load_config

    loaded = load_config(obj.config_path)  # type: ignore[attr-defined]
    pid_path = loaded.data_dir / "state" / "kinmail.pid"
    try:
        pid = int(pid_path.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError) as exc:
        raise KinmailError(f"no running server found ({pid_path}): {exc}") from exc
    click.echo(f"asked the server (pid {pid}) to reload")


def register(group: click.Group) -> None:
    group.add_command(serve)
    group.add_command(demo)
    group.add_command(reload)
