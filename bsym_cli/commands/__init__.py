"""Subcommands of ``bsym``."""
