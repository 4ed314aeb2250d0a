"""What a dispatcher reads: local times with the zone named, expiry dates as entered, and
`alpr alerts` refusing to start a worker for someone who meant the operator view."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from alpr.alerting import hotlist
from alpr.core.errors import ConfigError
from alpr.core.settings import load_settings
from alpr.schemas import Alert, GeoPosition, PartialPlate, PlateRead
from alpr.schemas.models import MatchKind
from alpr.topologies.alerts import VERIFY_NOTICE, expiry_text, format_alert

ZONE = "America/Los_Angeles"


def _alert(expires: str, seen: datetime) -> Alert:
    read = PlateRead(read_id="r-1", camera_id="cam-7", agency="SPD", plate="7ABC123", plate_state="CA",
                     confidence=0.9, captured_at=seen, read_at=seen, position=GeoPosition(lat=38.5, lon=-121.4),
                     model_version="t")
    entry = hotlist.make_entry(plate="7ABC123", state="CA", reason="STOLEN_VEHICLE", source="STATE",
                               case_number="26-1", expires=expires, agency="SPD", user="det")
    return Alert(alert_id="a1", kind="EXACT", agency="SPD", read=read, hotlist_entry=entry,
                 verify_before_action=VERIFY_NOTICE, raised_at=seen)


@pytest.mark.parametrize("entered", ["2027-06-30", "2026-12-31", "2028-02-29"])
def test_expiry_date_is_shown_as_entered(entered):
    text = format_alert(_alert(entered, datetime(2026, 11, 24, 7, 3, 9, tzinfo=timezone.utc)), ZONE)
    assert f"expires {entered})" in text


def test_expiry_time_and_no_expiry():
    at = datetime(2027, 1, 15, 18, 30, tzinfo=timezone.utc)
    assert expiry_text(at, __import__("zoneinfo").ZoneInfo(ZONE)) == "2027-01-15 10:30:00 PST"
    assert "expires none" in format_alert(_alert("", datetime(2026, 11, 24, tzinfo=timezone.utc)), ZONE)


def test_times_are_local_with_the_zone_named():
    winter = format_alert(_alert("2027-06-30", datetime(2026, 11, 24, 7, 3, 9, tzinfo=timezone.utc)), ZONE)
    assert "seen 2026-11-23 23:03:09 PST" in winter and "07:03:09" not in winter
    summer = format_alert(_alert("2027-06-30", datetime(2026, 7, 4, 19, 0, 0, tzinfo=timezone.utc)), ZONE)
    assert "seen 2026-07-04 12:00:00 PDT" in summer
    assert "seen 2026-07-04 19:00:00 UTC" in format_alert(
        _alert("2027-06-30", datetime(2026, 7, 4, 19, 0, 0, tzinfo=timezone.utc)), "UTC")


def test_partial_shows_its_expiry_locally():
    seen = datetime(2026, 11, 24, 7, 3, 9, tzinfo=timezone.utc)
    a = _alert("", seen)
    p = PartialPlate(pattern_id="p1", pattern="7AB?12*", case_number="H-1", incident_type="HOMICIDE", agency="SPD",
                     entered_by="det", entered_at=seen, expires_at=seen + timedelta(days=30))
    text = format_alert(a.model_copy(update={"hotlist_entry": None, "partial": p, "kind": MatchKind.PARTIAL}), ZONE)
    assert "(SPD, entered by det; expires 2026-12-23 23:03:09 PST)" in text


def test_timezone_setting_defaults_to_california_and_refuses_unknown_zones(monkeypatch):
    monkeypatch.delenv("ALPR_TIMEZONE", raising=False)
    assert load_settings().timezone == ZONE
    monkeypatch.setenv("ALPR_TIMEZONE", "Pacific/Nowhere")
    with pytest.raises(ConfigError, match="ALPR_TIMEZONE"):
        load_settings()


@pytest.mark.parametrize("args", [["--user", "disp1"], ["--from-beginning"], ["--password-stdin"]])
def test_alerts_without_follow_refuses_view_options_and_starts_no_worker(monkeypatch, args):
    from alpr.cli import cli
    from alpr.topologies import alerts

    started = []
    monkeypatch.setattr(alerts, "run_worker", lambda *a, **k: started.append(1))
    result = CliRunner().invoke(cli, ["alerts", *args])
    assert result.exit_code != 0 and "--follow" in result.output and args[0] in result.output
    assert started == []
