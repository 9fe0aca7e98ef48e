"""kinmail: a complete, self-hosted e-mail server for a small group, in one Python process."""

__version__ = "0.1.0"
