"""ClickHouse SQL literals for statements the project writes itself (never for analysts' SQL).

Values a person or a record supplies (case numbers, plates, read ids, times) reach a
statement only through these, so quoting is done one way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone


def lit(value: str) -> str:
    """A ClickHouse string literal: backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ts_lit(value: datetime) -> str:
    """A UTC DateTime64(6) literal."""
    return f"toDateTime64({lit(value.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f'))}, 6, 'UTC')"


def in_list(values: Sequence[str]) -> str:
    """A parenthesised list of string literals, for `IN`."""
    return "(" + ", ".join(lit(v) for v in values) + ")"
