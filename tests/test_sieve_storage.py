"""ScriptStore keeps a script byte for byte: GETSCRIPT returns what PUTSCRIPT stored (RFC 5804 §2.9)."""

from __future__ import annotations

from pathlib import Path

from kinmail.sieve.storage import ScriptStore


def test_script_text_round_trips_with_crlf(tmp_path: Path) -> None:
    store = ScriptStore(tmp_path, "alice@example.test")
    text = 'require "fileinto";\r\nif header :contains "subject" "x" {\r\n  fileinto "X";\r\n}\r\n'
    store.put("main", text)
    assert store.get("main") == text
