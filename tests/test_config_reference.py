"""docs/configuration.md is generated from the schema and must be kept in step with it; every key has a
description and a default; the commented kinmail.toml that `kinmail init` writes means exactly the defaults."""

from __future__ import annotations

from pathlib import Path

from kinmail.config.load import parse_config
from kinmail.config.reference import render_markdown, render_toml, sections, top_level_keys

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_committed_reference_matches_the_schema() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_markdown(), (
        "docs/configuration.md is stale: run `python -m kinmail.config.reference > docs/configuration.md`"
    )


def test_every_key_is_documented() -> None:
    for name, info in top_level_keys():
        assert info.description, name
    for section, model in sections():
        assert model.__doc__, section
        for key, info in model.model_fields.items():
            assert info.description, f"{section}.{key}"
            assert not info.is_required(), f"{section}.{key} has no default"


def test_commented_template_uncommented_gives_the_defaults() -> None:
    template = render_toml({"hostname": "mail.example.org", "domains": ["example.org"]})
    config = parse_config(template)
    assert config.hostname == "mail.example.org" and config.domains == ["example.org"]
    uncommented = "\n".join(
        line[1:] if line.startswith("#") and not line.startswith("# ") and " = " in line else line
        for line in render_toml().splitlines()
    )
    assert uncommented != render_toml()
    assert parse_config(uncommented) == parse_config("")
