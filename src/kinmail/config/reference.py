"""The configuration reference, generated from the schema: `docs/configuration.md` and the commented
`kinmail.toml` that `kinmail init` writes.

`render_markdown()` is what docs/configuration.md holds (a test fails when the two differ; regenerate with
`python -m kinmail.config.reference > docs/configuration.md`). `render_toml(...)` is the file `kinmail init`
writes: every key with its default, commented out. Keeps nothing on disk.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from kinmail.config.schema import Config


def toml_value(value: Any) -> str:
    """A Python value as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + (f" {items} " if items else "") + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else json.dumps(key)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}s"
    if origin is dict:
        return f"table of {_type_name(typing.get_args(annotation)[1])}s"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


def _bounds(info: FieldInfo) -> str:
    """The numeric limits pydantic keeps in the field's metadata (annotated-types' Ge, Gt, Le, Lt)."""
    parts = []
    for item in info.metadata:
        for attribute, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attribute, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return ", ".join(parts)


def _default(info: FieldInfo) -> Any:
    return info.get_default(call_default_factory=True)


def sections() -> list[tuple[str, type[BaseModel]]]:
    """(name, model) of each `[section]`, in schema order."""
    found = []
    for name, info in Config.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.append((name, annotation))
    return found


def top_level_keys() -> list[tuple[str, FieldInfo]]:
    return [
        (name, info)
        for name, info in Config.model_fields.items()
        if not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel))
    ]


def _doc(model: type[BaseModel]) -> str:
    return inspect.cleandoc(model.__doc__ or "").replace("\n", " ")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(fields: list[tuple[str, FieldInfo]]) -> list[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, info in fields:
        kind = _type_name(info.annotation)
        bounds = _bounds(info)
        if bounds:
            kind += f", {bounds}"
        default = f"`{_md_escape(toml_value(_default(info)))}`"
        lines.append(f"| `{name}` | {kind} | {default} | {_md_escape(info.description or '')} |")
    return lines


FILE_FORMATS = """\
## The `users` file

One account a line, in the style of Dovecot's passwd-file. Blank lines and lines starting with `#` are
ignored. `kinmail user add|passwd|remove` edit it and keep comments and order.

```
alice@example.org:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$...:quota=2G
bob@example.org:{BLF-CRYPT}$2y$05$...
# A line copied from a Dovecot passwd-file works as it is:
carol@example.org:{SHA512-CRYPT}$6$...:1000:1000::/home/carol::userdb_quota_rule=*:storage=1G
dave@example.org::                                  # empty password: receives mail, cannot log in
```

- The address is compared without regard to case; its domain must be in `domains`.
- The password is `{SCHEME}hash`. New passwords are argon2id. Accepted as they are: `{ARGON2ID}`,
  `{ARGON2I}`, `{BLF-CRYPT}`, `{SHA512-CRYPT}`, `{SHA256-CRYPT}`, `{MD5-CRYPT}`, `{SSHA512}`, `{SSHA256}`,
  `{SSHA}`, `{SHA512}`, `{SHA256}`, `{SHA}`, `{PLAIN}`, `{CLEAR}` (the SHA forms also as `.HEX`), and crypt(3)
  hashes without a prefix (`$6$`, `$5$`, `$2y$`), as Dovecot reads them.
- Extra fields are space-separated `key=value`; `quota=SIZE` (`500M`, `2G`, powers of 1024) limits the
  mailbox. Dovecot's `userdb_quota_rule=*:storage=SIZE` means the same.

`kinmail check` reports `users:LINE: reason` for a line that does not parse, an unknown scheme, a domain that
is not ours and a duplicate.

## The `aliases` file

A Postfix `virtual` table: a source address, then one or more targets separated by commas or spaces. A line
starting with whitespace continues the one before; `#` starts a comment line.

```
postmaster@example.org   alice@example.org
team@example.org         alice@example.org, bob@example.org, friend@elsewhere.example
alice@example.org        alice@example.org, alice@phone.example    # keep a copy and forward
@example.net             alice@example.org                          # catch-all for example.net
abuse                    alice@example.org                          # abuse@ at each of our domains
```

Lookup of `user+tag@domain`, first match wins: the aliases `user+tag@domain`, `user@domain`, `user+tag`,
`user` (Postfix's order; the tag goes along to the targets), then the account `user+tag@domain` or
`user@domain` (the tag is kept, e.g. for Sieve's subaddress test), and last the catch-all `@domain`. A
catch-all never hides a real account. Targets are expanded again, so an alias may point at another alias; a
target equal to its source means that source's own mailbox. Targets outside our domains are forwards. A
target `@otherdomain` means the same user at otherdomain. The delimiter is `[delivery] recipient_delimiter`.

`kinmail check` reports `aliases:LINE: reason` for a target at one of our domains that leads nowhere and for
loops.

## Maps

Settings that take a map (`smtpd.client_access`, `smtpd.sender_access`, `smtpd.recipient_access`,
`delivery.relayhost_credentials`) name it as `type:file` (relative to the config folder) or inline. The types
are Postfix's, with Postfix's semantics:

| spec | kind | search |
|---|---|---|
| `texthash:FILE` or just `FILE` (also `hash:`, `lmdb:`, `btree:`, `cdb:`, `dbm:`, which read the source file) | indexed: `key value` lines as `postmap` reads them, keys without regard to case | see below |
| `regexp:FILE` | `/re/flags result`, `!/re/ result`, `if /re/` … `endif`; flag `i` (on by default) toggles case, `m` multi-line; `$1`, `${1}`, `$(1)`, `$$` in results | first match wins, whole key only |
| `pcre:FILE` | as `regexp:` with Python regular expressions; flags also `s`, `x` | first match wins, whole key only |
| `cidr:FILE` | `192.168.0.0/16 result`, `2001:db8::/32 result`, `192.0.2.1 result`, `!network result`, `if network` … `endif` | first match wins |
| `inline:{ key=value, { key = text with spaces } }` | indexed, written in the setting | see below |
| `static:{text}` or `static:text` | every lookup gives the text | — |
| `regexp:{ {rule}, {rule} }`, `cidr:{ {rule} }` | rules written in the setting | as the file forms |

Indexed maps are searched with partial keys as Postfix does. For a full address (virtual(5) order):
`user+ext@domain`, `user@domain`, `user+ext`, `user`, `@domain`. As an access map (access(5)):
`user+ext@domain`, `user@domain`, `domain` and its parent domains, `user+ext@`, `user@`; a client address
`1.2.3.4`, `1.2.3`, `1.2`, `1` (IPv6 by dropping `:pairs`). Results of access maps: `OK`, `REJECT [text]`,
`DEFER [text]`, `DISCARD`, `HOLD`, `DUNNO`, or an SMTP code with text.

A map file that changes is read again on the next lookup (looked at at most once a second); if the new file
does not parse, the old table stays in use and the log says why. `kinmail map query SPEC KEY` shows what a
lookup gives, like `postmap -q`.
"""


def render_markdown() -> str:
    """The whole of docs/configuration.md."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from src/kinmail/config/schema.py by kinmail.config.reference; do not edit by hand. -->",
        "",
        "kinmail is configured by `kinmail.toml` and the `users` and `aliases` files beside it. Relative paths",
        "resolve against the folder of `kinmail.toml`. Unknown keys are errors, and values must have the type",
        'shown (`true`, not `"yes"`). `kinmail check` lists every problem at once as `file:key` or `file:line`;',
        "`kinmail init` writes a `kinmail.toml` that shows every key below with its default, commented out.",
        "",
        "## Top level",
        "",
        *_md_table(top_level_keys()),
    ]
    for name, model in sections():
        lines += ["", f"## `[{name}]`", ""]
        doc = _doc(model)
        if doc:
            lines += [doc, ""]
        lines += _md_table(list(model.model_fields.items()))
    lines += ["", FILE_FORMATS.rstrip()]
    return "\n".join(lines) + "\n"


def _comment(text: str, prefix: str = "# ") -> list[str]:
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + len(word) + 1 > 100:
            lines.append(prefix + current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        lines.append(prefix + current)
    return lines


def render_toml(values: dict[str, Any] | None = None, header: str = "") -> str:
    """A commented `kinmail.toml`: every key with its description and default, commented out, except the
    top-level keys given in `values`, which are set."""
    values = values or {}
    lines = _comment(header) if header else []
    lines += [
        "# kinmail configuration. Every key is shown with its default, commented out; remove the '#' to change",
        "# one. Relative paths resolve against this file's folder. `kinmail check` validates the whole setup;",
        "# docs/configuration.md explains every key.",
        "",
    ]
    for name, info in top_level_keys():
        lines += _comment(info.description or "")
        if name in values:
            lines.append(f"{name} = {toml_value(values[name])}")
        else:
            lines.append(f"#{name} = {toml_value(_default(info))}")
        lines.append("")
    for name, model in sections():
        doc = _doc(model)
        if doc:
            lines += _comment(doc)
        lines.append(f"[{name}]")
        for key, info in model.model_fields.items():
            lines += _comment(info.description or "")
            lines.append(f"#{key} = {toml_value(_default(info))}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_markdown(), end="")
