"""The layering rules of design.md §3, checked on the source: the sans-I/O and library packages import
nothing from the servers, the store or the queue; and no module grows past the size we can read."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "kinmail"
LIBRARY_PACKAGES = ("proto", "message", "dns", "mailauth", "sieve")
FORBIDDEN = (
    "smtpserver",
    "imapserver",
    "pop3server",
    "managesieve",
    "web",
    "store",
    "queue",
    "serve",
    "runtime",
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_library_packages_do_not_import_servers_store_or_queue() -> None:
    offenders = []
    for package in LIBRARY_PACKAGES:
        for path in sorted((SRC / package).rglob("*.py")):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "kinmail" and len(parts) > 1 and parts[1] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert offenders == []


def test_a_forbidden_import_would_be_found(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from kinmail.store.store import Store\nimport kinmail.queue\n")
    assert _imports(sample) == {"kinmail.store.store", "kinmail.queue"}


def test_no_module_is_over_900_lines() -> None:
    long = [
        f"{path.relative_to(SRC)} ({n} lines)"
        for path in SRC.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 900
    ]
    assert long == []
