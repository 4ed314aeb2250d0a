"""Subcommands by domain; each module exposes COMMANDS, a list of click commands or groups.

One module per domain keeps each area's command-line surface next to nothing else.
"""

DOMAINS = ("recognition", "alerting", "warehouse", "access", "operations")
