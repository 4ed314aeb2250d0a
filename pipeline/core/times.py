"""The one rule for times a person types: ISO 8601 with a timezone, or a bare date (UTC).

A time without a timezone is refused rather than guessed: "10:00" on a hold or a release
scope means different reads in Sacramento and in UTC. A bare date is a whole UTC day, so
a caller says which end of it a bound means: the start (from, as-of) or the end (to,
expires: "through that day").
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

from alpr.core.errors import AlprError

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class BadTime(AlprError, ValueError):
    """A typed time that is not ISO 8601 with a timezone, nor a bare date."""

    exit_code = 2


def parse_when(text: str, option: str, date_means: Literal["start", "end"] = "start") -> datetime:
    text = text.strip()
    try:
        if _DATE.fullmatch(text):
            day = date.fromisoformat(text) + (timedelta(days=1) if date_means == "end" else timedelta())
            return datetime.combine(day, time(0), tzinfo=timezone.utc)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadTime(f"{option} {text!r} is not an ISO 8601 date or time") from None
    if value.tzinfo is None:
        raise BadTime(f"{option} {text!r} has no timezone (add Z or +hh:mm, or give a bare date for UTC)")
    return value.astimezone(timezone.utc)
