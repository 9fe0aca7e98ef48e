"""The layering rules of design.md §3, checked on the source: the sans-I/O and library packages import
nothing from the servers, the store or the queue; no module grows past the size we can read; and the services do
not load a big library they need only now and then."""

from __future__ import annotations

import ast
import subprocess
import sys
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


def test_a_server_loads_cryptography_only_when_it_needs_a_key() -> None:
    """`cryptography` adds about 14 MB to the server's memory: it is imported when a certificate or a DKIM key
    is made or a DKIM key loaded, not by the services themselves."""
    code = (
        "import sys, importlib, kinmail.serve as s\n"
        "for m in s.SERVICE_MODULES: importlib.import_module(m)\n"
        "import kinmail.runtime\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
