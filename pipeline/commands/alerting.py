"""`alpr` subcommands: alerting."""

COMMANDS: list = []
