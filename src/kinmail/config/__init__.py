"""Configuration: the `kinmail.toml` schema, loading with located errors, users, aliases, Postfix-style maps."""
