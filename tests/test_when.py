"""Typed times: one rule everywhere (timezone required; a bare date is a UTC day)."""

from datetime import datetime, timezone

import pytest

from alpr.core.times import BadTime, parse_when


def test_bare_date_is_start_or_end_of_the_utc_day() -> None:
    assert parse_when("2026-03-01", "--from") == datetime(2026, 3, 1, tzinfo=timezone.utc)
    assert parse_when("2026-03-01", "--to", "end") == datetime(2026, 3, 2, tzinfo=timezone.utc)


def test_zone_is_kept_and_normalised() -> None:
    assert parse_when("2026-03-01T10:00:00-08:00", "--from") == datetime(2026, 3, 1, 18, tzinfo=timezone.utc)
    assert parse_when("2026-03-01T10:00:00Z", "--from").tzinfo == timezone.utc


@pytest.mark.parametrize("text, why", [("2026-03-01T10:00", "no timezone"), ("March 1", "not an ISO 8601")])
def test_refused_with_the_option_named(text: str, why: str) -> None:
    with pytest.raises(BadTime, match=why) as err:
        parse_when(text, "--as-of")
    assert "--as-of" in str(err.value)
