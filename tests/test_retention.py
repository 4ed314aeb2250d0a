"""Retention: reads past the retention period are purged now, held ones are kept, released ones go.

Reads are inserted straight into the store (the sink is tested in test_sink.py).
Background TTL merges are stopped in these tests (`SYSTEM STOP TTL MERGES`) so that
only `retention.enforce` can delete; otherwise a merge could purge an old read
before the counts are taken and the test would not show what enforce did.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from alpr.warehouse import holds
from alpr.core import kafka
from alpr.warehouse import retention
from alpr.warehouse import sink
from alpr.audit.trail import AuditLog, read_events
from alpr.core.errors import ConfigError, Refused
from alpr.core.settings import load_settings
from tests.records import alert, read

NOW = datetime.now(timezone.utc)


@pytest.fixture
def parts(settings, codec, store):
    store.command(f"SYSTEM STOP TTL MERGES {settings.clickhouse_database}.reads")
    store.command(f"SYSTEM STOP TTL MERGES {settings.clickhouse_database}.alerts")
    audit = AuditLog(settings, codec, "test-retention")
    publisher = kafka.Publisher(settings, codec, "test-retention")
    return audit, publisher


def _reads(prefix: str, n: int, age_days: float, plate: str = "7ABC123"):
    return [read(i, plate).model_copy(update={"read_id": f"{prefix}{i}", "captured_at": NOW - timedelta(days=age_days)})
            for i in range(n)]


def _ids(store) -> set[str]:
    return {r["read_id"] for r in store.rows("SELECT read_id FROM alpr.reads")}


def test_purge_keeps_held_reads_until_released(settings, codec, store, parts, unique) -> None:
    audit, publisher = parts
    old = _reads(f"{unique}-old", 5, 400)
    by_plate = _reads(f"{unique}-plate", 2, 380, plate="4XYZ999")
    young = _reads(f"{unique}-young", 3, 30)
    sink.write_new(store, "alpr", sink.READS_SPEC, old + by_plate + young)
    sink.write_new(store, "alpr", sink.ALERTS_SPEC, [
        alert().model_copy(update={"alert_id": f"{unique}-a{i}", "read": old[i], "raised_at": old[i].captured_at})
        for i in (0, 1)])
    case = f"CASE-{unique}"
    holds.place(settings, audit, publisher, case=case, reason="robbery evidence", user="sgt1",
                read_ids=[old[1].read_id])
    holds.place(settings, audit, publisher, case=case, reason="robbery evidence", user="sgt1",
                plate="4XYZ999", range_from=NOW - timedelta(days=390), range_to=NOW - timedelta(days=370))

    counts = retention.enforce(store, settings, codec, audit)

    assert (counts["purged"], counts["held_kept"], counts["alerts_purged"]) == (4, 3, 1)
    assert _ids(store) == {old[1].read_id} | {r.read_id for r in by_plate + young}
    assert [r["alert_id"] for r in store.rows("SELECT alert_id FROM alpr.alerts")] == [f"{unique}-a1"]

    holds.release(settings, codec, audit, publisher, case=case, reason="case closed", user="sgt2")
    counts = retention.enforce(store, settings, codec, audit)
    assert (counts["purged"], counts["held_kept"]) == (3, 0)
    assert _ids(store) == {r.read_id for r in young}

    purges = [e for _, e in read_events(settings, codec) if e.action == retention.PURGE and e.chain == audit._chain]
    assert [(e.rows, e.details["held_kept"]) for e in purges] == [(4, "3"), (3, "0")]
    assert all(e.actor == retention.SYSTEM_ACTOR and e.outcome.value == "ALLOWED" for e in purges)


def test_plate_hold_covers_reads_that_arrive_later(settings, codec, store, parts, unique) -> None:
    """A plate-range hold is expanded again before every purge, so a late read in its range is kept."""
    audit, publisher = parts
    case = f"CASE-{unique}"
    holds.place(settings, audit, publisher, case=case, reason="homicide", user="det1", plate="9LATE99",
                range_from=NOW - timedelta(days=400), range_to=NOW - timedelta(days=380))
    retention.enforce(store, settings, codec, audit)  # applies the hold while no read matches it
    late = _reads(f"{unique}-late", 2, 390, plate="9LATE99") + _reads(f"{unique}-young", 1, 5)
    sink.write_new(store, "alpr", sink.READS_SPEC, late)
    counts = retention.enforce(store, settings, codec, audit)
    assert (counts["purged"], counts["held_kept"]) == (0, 2)
    assert _ids(store) == {r.read_id for r in late}


def test_as_of_simulates_an_earlier_date_and_refuses_the_future(settings, codec, store, parts, unique) -> None:
    audit, _ = parts
    sink.write_new(store, "alpr", sink.READS_SPEC, _reads(f"{unique}-a", 2, 400) + _reads(f"{unique}-b", 1, 500))
    counts = retention.enforce(store, settings, codec, audit, as_of=NOW - timedelta(days=100))
    assert counts["purged"] == 1  # only the 500-day-old read was past retention 100 days ago
    with pytest.raises(Refused, match="in the future"):
        retention.enforce(store, settings, codec, audit, as_of=NOW + timedelta(days=1))
    assert len(_ids(store)) == 2


def test_ttl_safety_net_spares_held_reads(settings, codec, store, parts, unique) -> None:
    """The background TTL (002_reads.sql) consults the same dictionary as enforce."""
    audit, publisher = parts
    old = _reads(f"{unique}-ttl", 3, 400) + _reads(f"{unique}-young", 1, 5)
    sink.write_new(store, "alpr", sink.READS_SPEC, old)
    holds.place(settings, audit, publisher, case=f"CASE-{unique}", reason="evidence", user="sgt1",
                read_ids=[old[2].read_id])
    holds.sync(store, settings, codec)
    store.command("SYSTEM START TTL MERGES alpr.reads")
    store.command("ALTER TABLE alpr.reads MATERIALIZE TTL SETTINGS mutations_sync = 2")
    assert _ids(store) == {old[2].read_id, old[3].read_id}


def test_retention_below_one_year_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="ALPR_RETENTION_DAYS.*at least 365"):
        load_settings(retention_days=364, data_dir=tmp_path)


def test_ttl_follows_the_retention_setting(settings, store) -> None:
    longer = settings.model_copy(update={"retention_days": 730})
    assert retention.ensure_ttl(store, longer) is True
    ddl = store.scalar("SELECT create_table_query FROM system.tables WHERE database='alpr' AND name='reads'")
    assert "toIntervalDay(730)" in ddl and "dictHas('alpr.held_reads_dict'" in ddl
    alerts = store.scalar("SELECT create_table_query FROM system.tables WHERE database='alpr' AND name='alerts'")
    assert "toIntervalDay(730)" in alerts and "dictHas('alpr.held_reads_dict'" in alerts
    assert retention.ensure_ttl(store, longer) is False


def test_daily_schedule() -> None:
    at = datetime(2026, 11, 22, 2, 59, tzinfo=timezone.utc)
    assert retention.next_run(at, "03:00") == datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)
    assert retention.next_run(at.replace(hour=3), "03:00") == datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)


def test_enforce_command_prints_counts(settings, monkeypatch) -> None:
    import json

    from click.testing import CliRunner

    from alpr.cli import cli
    from alpr.core.settings import settings as cached

    monkeypatch.setenv("ALPR_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("ALPR_DATA_DIR", str(settings.data_dir))
    cached.cache_clear()
    from alpr.schemas import Codec
    from tests.people import PASSWORD, publish_user

    publish_user(settings, Codec(), "records1", role="ADMINISTRATOR")
    publish_user(settings, Codec(), "analyst9")
    login = ["--user", "records1", "--password-stdin"]
    try:
        runner = CliRunner()
        unmigrated = runner.invoke(cli, ["retention", "enforce", *login], input=f"{PASSWORD}\n")
        assert unmigrated.exit_code != 0 and "run `alpr migrate` first" in unmigrated.stderr
        assert runner.invoke(cli, ["migrate"]).exit_code == 0
        analyst = runner.invoke(cli, ["retention", "enforce", "--user", "analyst9", "--password-stdin"],
                                input=f"{PASSWORD}\n")
        assert analyst.exit_code != 0 and "needs administrator" in analyst.stderr  # a purge is an admin's act
        done = runner.invoke(cli, ["retention", "enforce", "--as-of", "2026-01-01", *login], input=f"{PASSWORD}\n")
        assert done.exit_code == 0, done.output
        counts = json.loads(done.stdout)
        assert (counts["purged"], counts["held_kept"]) == (0, 0)
        assert counts["as_of"].startswith("2026-01-01T00:00:00")
        future = runner.invoke(cli, ["retention", "enforce", "--as-of", "2999-01-01", *login], input=f"{PASSWORD}\n")
        assert future.exit_code != 0 and "in the future" in future.stderr
    finally:
        cached.cache_clear()
