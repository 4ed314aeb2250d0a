"""`alpr` subcommands: recognition."""

COMMANDS: list = []
