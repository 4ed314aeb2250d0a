"""`alpr` subcommands: warehouse."""

COMMANDS: list = []
