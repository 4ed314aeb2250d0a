"""`alpr` subcommands: operations."""

COMMANDS: list = []
