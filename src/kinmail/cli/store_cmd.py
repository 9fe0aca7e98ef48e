"""`kinmail index rebuild ADDRESS|--all` and `kinmail index check [ADDRESS]`: the mail indexes.

`rebuild` drops a user's index (`data_dir/index/DOMAIN/USER.sqlite`) and builds it again from the Maildir under
the user's lock, with a progress bar; UIDs and UIDVALIDITY come back from `dovecot-uidlist`, so clients keep their
caches. A running server notices the new file and reopens it. `check` compares each index with its Maildir
without changing anything and exits 1 when they disagree (a later `refresh` or a rebuild would fix it).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from kinmail.core.errors import KinmailError


def _store(obj: object) -> tuple[Path, Path]:
    from kinmail.config.load import load_config

    data_dir = load_config(obj.config_path).data_dir  # type: ignore[attr-defined]
    return data_dir / "mail", data_dir / "index"


def _count_files(maildir: Path) -> int:
    total = 0
    for folder in [maildir, *(p for p in maildir.iterdir() if p.name.startswith(".") and p.is_dir())]:
        for sub in ("new", "cur"):
            try:
                total += sum(1 for name in os.listdir(folder / sub) if not name.startswith("."))
            except (FileNotFoundError, NotADirectoryError):
                continue
    return total


@click.group("index")
def index_group() -> None:
    """Rebuild or check the per-user mail indexes."""


@index_group.command("rebuild")
@click.argument("address", required=False)
@click.option("--all", "all_users", is_flag=True, help="Every user with a Maildir.")
@click.pass_obj
def rebuild(obj: object, address: str | None, all_users: bool) -> None:
    """Build ADDRESS's index (or every index) again from the Maildir, keeping UIDs."""
    from kinmail.store import Store

    if bool(address) == all_users:
        raise click.UsageError("give one ADDRESS or --all")
    mail_root, index_root = _store(obj)
    store = Store(mail_root, index_root)
    addresses = store.users_on_disk() if all_users else [address.lower()]  # type: ignore[union-attr]
    console = Console(stderr=True)
    try:
        for addr in addresses:
            local, _, domain = addr.rpartition("@")
            maildir = mail_root / domain / local
            if not (maildir / "cur").is_dir():
                raise KinmailError(f"no Maildir for {addr} ({maildir})")
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
                disable=not console.is_terminal,
            ) as progress:
                task = progress.add_task(addr, total=_count_files(maildir))

                def advance(n: int, task: TaskID = task) -> None:
                    progress.advance(task, n)

                count = store.rebuild(addr, progress=advance)
            click.echo(f"{addr}: {count} messages indexed")
    finally:
        store.close()


def _check_user(index_path: Path, maildir: Path) -> list[str]:
    from kinmail.store import maildir as md
    from kinmail.store.names import folder_dir_name

    problems: list[str] = []
    if not index_path.exists():
        return ["no index (it is built on first use)"]
    try:
        conn = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True)
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                return [f"index damaged: {verdict}"]
            folders = conn.execute("SELECT id, name, uidvalidity FROM folders").fetchall()
            for folder_id, name, uidvalidity in folders:
                path = maildir / folder_dir_name(name) if name != "INBOX" else maildir
                if not (path / "cur").is_dir():
                    problems.append(f"{name}: in the index but not on disk")
                    continue
                indexed = {
                    base: filename
                    for base, filename in conn.execute(
                        "SELECT base, filename FROM messages WHERE folder=?", (folder_id,)
                    )
                }
                on_disk: dict[str, str] = {}
                for sub in ("new", "cur"):
                    for fname in os.listdir(path / sub):
                        if not fname.startswith("."):
                            on_disk[md.split_name(fname)[0]] = f"{sub}/{fname}"
                missing = len(indexed.keys() - on_disk.keys())
                unindexed = len(on_disk.keys() - indexed.keys())
                renamed = sum(1 for b, f in indexed.items() if b in on_disk and on_disk[b] != f)
                if missing or unindexed or renamed:
                    problems.append(
                        f"{name}: {unindexed} files not indexed, {missing} indexed files gone, {renamed} renamed"
                    )
                uidlist = md.read_uidlist(path)
                if uidlist is None:
                    problems.append(f"{name}: no dovecot-uidlist")
                elif uidlist.uidvalidity != uidvalidity:
                    problems.append(
                        f"{name}: UIDVALIDITY {uidvalidity} in the index, {uidlist.uidvalidity} on disk"
                    )
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return [f"index unreadable: {exc}"]
    return problems


@index_group.command("check")
@click.argument("address", required=False)
@click.pass_obj
def check(obj: object, address: str | None) -> None:
    """Compare indexes with their Maildirs (read-only); exit 1 when one disagrees."""
    from kinmail.store import Store

    mail_root, index_root = _store(obj)
    addresses = [address.lower()] if address else Store(mail_root, index_root).users_on_disk()
    bad = 0
    for addr in addresses:
        local, _, domain = addr.rpartition("@")
        problems = _check_user(index_root / domain / f"{local}.sqlite", mail_root / domain / local)
        if problems:
            bad += 1
            for problem in problems:
                click.echo(f"{addr}: {problem}")
        else:
            click.echo(f"{addr}: ok")
    if bad:
        raise KinmailError(f"{bad} of {len(addresses)} indexes disagree with their Maildir")


def register(group: click.Group) -> None:
    group.add_command(index_group)
