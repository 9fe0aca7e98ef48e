"""`kinmail queue list|show|flush|delete|hold|release` on the live spool.

Reading (`list`, `show`) reads the spool's files directly. Changes go through the spool's single writer:
- while the server runs (it holds the flock on `data_dir/queue/.lock`), the command writes a request file
  `queue/control/NAME.req`, sends SIGUSR1 to the pid in `data_dir/state/kinmail.pid`, and waits for the
  server's answer in `NAME.done` — the server carries the change out between deliveries, so a message being
  delivered is never pulled from under the scheduler;
- when no server runs, the command takes the lock itself and edits the spool.
`flush` asks the running server to retry every deferred message now.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from kinmail.core.atomic import atomic_write
from kinmail.core.errors import KinmailError
from kinmail.queue.spool import QueuedMessage, read_spool

ANSWER_TIMEOUT = 15.0


def _data_dir(obj: object) -> Path:
    from kinmail.config.load import load_config

    return load_config(obj.config_path).data_dir  # type: ignore[attr-defined]


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            n = seconds // length
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return f"{seconds} seconds ago"


def _state(meta: QueuedMessage) -> str:
    if meta.held:
        return "held"
    return "deferred" if meta.attempts else "active"


def _find(data_dir: Path, queue_id: str) -> QueuedMessage:
    for meta in read_spool(data_dir / "queue"):
        if meta.queue_id == queue_id.upper():
            return meta
    raise KinmailError(f"no such message in the queue: {queue_id}")


def _server_pid(data_dir: Path) -> int | None:
    try:
        pid = int((data_dir / "state" / "kinmail.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _request(data_dir: Path, action: str, queue_id: str) -> str:
    """Carry out `action` through the running server, or directly when none holds the spool lock."""
    import fcntl

    queue_dir = data_dir / "queue"
    control = queue_dir / "control"
    control.mkdir(parents=True, exist_ok=True)
    fd = os.open(queue_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
    except OSError:
        locked = False
    if locked:
        try:
            if action == "flush":
                return "no server is running: nothing to flush"
            from kinmail.queue.service import apply_request
            from kinmail.queue.spool import Queue

            class _Rt:  # just enough of a runtime for the spool
                pass

            rt = _Rt()
            rt.data_dir = data_dir  # type: ignore[attr-defined]
            queue = Queue(rt)  # type: ignore[arg-type]
            for meta in read_spool(queue_dir):
                queue.messages[meta.queue_id] = meta
            return apply_request(queue, action, queue_id.upper())
        finally:
            os.close(fd)
    os.close(fd)
    pid = _server_pid(data_dir)
    if pid is None:
        raise KinmailError(
            f"the spool is locked but no server answers ({data_dir / 'state' / 'kinmail.pid'})"
        )
    name = f"{time.time_ns()}-{secrets.token_hex(4)}"
    atomic_write(control / f"{name}.req", json.dumps({"action": action, "id": queue_id.upper()}))
    os.kill(pid, signal.SIGUSR1)
    done = control / f"{name}.done"
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while time.monotonic() < deadline:
        if done.exists():
            answer = done.read_text().strip()
            done.unlink(missing_ok=True)
            return answer
        time.sleep(0.05)
    raise KinmailError("the server did not answer the request in time")


def _console() -> Console:
    """Full-width output when not on a terminal, so that ids are never folded in pipes and logs."""
    return Console() if sys.stdout.isatty() else Console(width=200)


@click.group()
def queue() -> None:
    """Look at and manage the mail queue."""


@queue.command("list")
@click.pass_obj
def list_(obj: object) -> None:
    """Every queued message: id, age, size, sender, recipients, state."""
    data_dir = _data_dir(obj)
    messages = read_spool(data_dir / "queue")
    console = _console()
    if not messages:
        console.print("The queue is empty.")
        return
    table = Table(title=f"{len(messages)} message{'s' if len(messages) != 1 else ''} in the queue")
    table.add_column("Queue ID", no_wrap=True, min_width=16)
    for column in ("Arrived", "Size", "From", "To", "State", "Last error"):
        table.add_column(column, overflow="fold")
    now = time.time()
    for meta in messages:
        pending = [r.address for r in meta.pending]
        table.add_row(
            meta.queue_id,
            _age(now - meta.arrival),
            _human_size(meta.size),
            meta.sender or "<>",
            ", ".join(pending) or "-",
            _state(meta),
            meta.last_error or "",
        )
    console.print(table)


@queue.command()
@click.argument("queue_id")
@click.pass_obj
def show(obj: object, queue_id: str) -> None:
    """The envelope, recipient states and headers of one message."""
    data_dir = _data_dir(obj)
    meta = _find(data_dir, queue_id)
    console = _console()
    arrived = datetime.datetime.fromtimestamp(meta.arrival).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    console.print(
        f"[bold]{meta.queue_id}[/bold]  {_state(meta)}, arrived {arrived}, {_human_size(meta.size)}"
    )
    console.print(f"From: {meta.sender or '<>'}   origin: {meta.origin}   attempts: {meta.attempts}")
    table = Table()
    for column in ("Recipient", "Status", "Reply"):
        table.add_column(column, overflow="fold")
    for rcpt in meta.recipients:
        table.add_row(rcpt.address, rcpt.status, rcpt.text)
    console.print(table)
    try:
        with open(data_dir / "queue" / f"{meta.queue_id}.eml", "rb") as handle:
            head = handle.read(65536)
    except OSError:
        return
    end = head.find(b"\r\n\r\n")
    console.print(
        head[: end if end >= 0 else len(head)].decode("utf-8", "replace"), markup=False, highlight=False
    )


def _change(obj: object, action: str, queue_id: str) -> None:
    data_dir = _data_dir(obj)
    answer = _request(data_dir, action, queue_id)
    if answer != "ok":
        raise KinmailError(answer)
    click.echo(f"{queue_id.upper()}: {action} done")


@queue.command()
@click.pass_obj
def flush(obj: object) -> None:
    """Ask the running server to retry every deferred message now."""
    answer = _request(_data_dir(obj), "flush", "")
    if answer != "ok":
        raise KinmailError(answer)
    click.echo("asked the server to retry every deferred message")


@queue.command()
@click.argument("queue_id")
@click.pass_obj
def delete(obj: object, queue_id: str) -> None:
    """Remove a message from the queue without delivering it or bouncing it."""
    _change(obj, "delete", queue_id)


@queue.command()
@click.argument("queue_id")
@click.pass_obj
def hold(obj: object, queue_id: str) -> None:
    """Keep a message in the queue without trying to deliver it."""
    _change(obj, "hold", queue_id)


@queue.command()
@click.argument("queue_id")
@click.pass_obj
def release(obj: object, queue_id: str) -> None:
    """Deliver a held message again."""
    _change(obj, "release", queue_id)


def register(group: click.Group) -> None:
    group.add_command(queue)
