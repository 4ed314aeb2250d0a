"""`alpr` subcommands: access."""

COMMANDS: list = []
