"""A runner for imaptest's scripted tests: `script` parses, `match` compares, `runner` executes."""

from tests.imaptest.runner import Conn, ScriptRun
from tests.imaptest.script import ScriptFailure, load_script

__all__ = ["Conn", "ScriptFailure", "ScriptRun", "load_script"]
