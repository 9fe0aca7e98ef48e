"""Loading `kinmail.toml`: TOML syntax, then the schema, with every problem located as `file:line` or `file:key`.

Called by `kinmail serve` (through `Runtime.load` and `Runtime.reload`), by `kinmail check` and by every CLI
command that needs the configuration. Keeps nothing on disk; relative paths in the file resolve against the
folder the file is in.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from kinmail.config.schema import Config
from kinmail.core.errors import ConfigError, Problem

_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration and where it came from."""

    path: Path
    config: Config

    @property
    def dir(self) -> Path:
        """The folder of the config file: relative paths in it resolve here."""
        return self.path.parent

    @property
    def data_dir(self) -> Path:
        """`data_dir`, resolved against the config folder."""
        return self.resolve(self.config.data_dir)

    def resolve(self, relative: str | Path) -> Path:
        """A path from the config (`~` expanded), made absolute against the config folder."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.dir / path


def _toml_problem(name: str, text: str, exc: tomllib.TOMLDecodeError) -> Problem:
    message = str(exc)
    match = _AT_LINE.search(message)
    if match:
        return Problem(f"{name}:{match.group(1)}", _AT_LINE.sub("", message))
    message = _AT_END.sub("", message)
    # The parser could not place the error: find the first prefix of the file that fails the same way.
    lines = text.splitlines(keepends=True)
    for count in range(1, len(lines) + 1):
        try:
            tomllib.loads("".join(lines[:count]))
        except tomllib.TOMLDecodeError as prefix_exc:
            if _AT_END.sub("", str(prefix_exc)) == message:
                return Problem(f"{name}:{count}", message)
    return Problem(f"{name}:{max(1, len(lines))}", message)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "model_type": "a table ([section])",
    "dict_type": "a table",
}


def _model_at(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in path:
        if not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def _schema_problem(name: str, error: Any) -> Problem:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    keys = [part for part in loc if isinstance(part, str)]
    items = [part for part in loc if isinstance(part, int)]
    where = f"{name}:{'.'.join(keys) if keys else '(top)'}"
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(tuple(keys[:-1]))
        message = "unknown section" if isinstance(value, dict) else "unknown key"
        if parent is not None:
            close = difflib.get_close_matches(keys[-1], list(parent.model_fields), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        return Problem(where, message)
    if kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {_describe(value)}"
    elif kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
    else:
        message = error["msg"]
        if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
            message = f"{message}, got {value!r}"
        message = message[0].lower() + message[1:]
    if items:
        message = f"item {items[0] + 1}: {message}"
    return Problem(where, message)


def parse_config(text: str, name: str = "kinmail.toml") -> Config:
    """Validate the text of a config file; raises ConfigError with every problem, located by `name`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_toml_problem(name, text, exc)]) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError([Problem(name, "arrays or tables nested too deeply")]) from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [_schema_problem(name, error) for error in exc.errors()]
        raise ConfigError(problems) from None


def load_config(path: Path | str) -> LoadedConfig:
    """Read and validate `path`; raises ConfigError listing every problem (`kinmail.toml:smtpd.mynetworks: ...`)."""
    path = Path(path).expanduser().absolute()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot read: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(f"{path.name}:{line}", "not valid UTF-8")]) from None
    return LoadedConfig(path, parse_config(text, path.name))
