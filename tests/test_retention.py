"""Retention: reads past the retention period are purged now, held ones are kept, released ones go.

Reads are inserted straight into the store (the sink is tested in test_sink.py).
Most tests stop background TTL merges (`SYSTEM STOP TTL MERGES`) so that only
`retention.enforce` deletes and the counts show what it did; the TTL tests turn them
on and force a TTL pass (`MATERIALIZE TTL`) to show what the safety net may delete.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
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


def _store_aged(store, reads, ingested_days: float) -> None:
    """Insert reads as if they had reached the store `ingested_days` ago (the TTL clock's start)."""
    table = sink.reads_table(reads)
    when = NOW - timedelta(days=ingested_days)
    store.insert_arrow("alpr.reads", table.append_column(
        "ingested_at", pa.array([when] * len(reads), pa.timestamp("us", tz="UTC"))))


def _ttl_pass(store) -> None:
    store.command("SYSTEM START TTL MERGES alpr.reads")
    store.command("ALTER TABLE alpr.reads MATERIALIZE TTL SETTINGS mutations_sync = 2")


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
    """The background TTL consults the same dictionary as enforce, for rows it may touch at all:
    stored longer ago than retention + margin (here 500 days)."""
    audit, publisher = parts
    old = _reads(f"{unique}-ttl", 3, 500)
    _store_aged(store, old, ingested_days=500)
    young = _reads(f"{unique}-young", 1, 5)
    sink.write_new(store, "alpr", sink.READS_SPEC, young)
    holds.place(settings, audit, publisher, case=f"CASE-{unique}", reason="evidence", user="sgt1",
                read_ids=[old[2].read_id])
    holds.sync(store, settings, codec)
    _ttl_pass(store)
    assert _ids(store) == {old[2].read_id, young[0].read_id}


def test_ttl_never_runs_ahead_of_the_audited_purge(settings, codec, store, parts, unique) -> None:
    """Historical reads (captured 500 days ago) that just arrived survive a TTL pass, held or not:
    only enforce deletes them, with a PURGE event that counts them."""
    audit, publisher = parts
    case = f"CASE-{unique}"
    historical = _reads(f"{unique}-hist", 4, 500, plate="5HIST55")
    holds.place(settings, audit, publisher, case=case, reason="cold case", user="det1",
                read_ids=[historical[0].read_id])
    sink.write_new(store, "alpr", sink.READS_SPEC, historical)  # ingested now
    stored_long_ago = _reads(f"{unique}-stale", 1, 500)
    _store_aged(store, stored_long_ago, ingested_days=400)  # retention 365 + margin 30 < 400: TTL may act
    _ttl_pass(store)
    assert _ids(store) == {r.read_id for r in historical}

    counts = retention.enforce(store, settings, codec, audit)
    assert (counts["purged"], counts["held_kept"]) == (3, 1)
    assert _ids(store) == {historical[0].read_id}
    purge = [e for _, e in read_events(settings, codec) if e.action == retention.PURGE and e.chain == audit._chain]
    assert [(e.rows, e.details["purged"], e.details["held_kept"]) for e in purge] == [(3, "3", "1")]


def test_plate_range_hold_on_the_purge_predicate_itself(settings, codec, store, parts, unique) -> None:
    """A read in a held plate range that is not (yet) in held_reads is still spared by enforce."""
    audit, publisher = parts
    hold = holds.place(settings, audit, publisher, case=f"CASE-{unique}", reason="hit and run", user="det1",
                       plate="6RNG666", range_from=NOW - timedelta(days=420), range_to=NOW - timedelta(days=410))
    held_sql = retention.held_sql("alpr", [hold])
    late = _reads(f"{unique}-late", 2, 415, plate="6RNG666") + _reads(f"{unique}-out", 1, 430, plate="6RNG666")
    sink.write_new(store, "alpr", sink.READS_SPEC, late)
    assert store.scalar("SELECT count() FROM alpr.held_reads WHERE hold_id = "
                        f"'{hold.hold_id}'") == 0  # nothing expanded it yet
    rows = store.rows(f"SELECT read_id FROM alpr.reads WHERE {held_sql} ORDER BY read_id")
    assert [r["read_id"] for r in rows] == [late[0].read_id, late[1].read_id]
    counts = retention.enforce(store, settings, codec, audit)
    assert (counts["purged"], counts["held_kept"]) == (1, 2)


def test_ttl_and_enforce_spare_reads_a_plate_hold_caught_on_arrival(settings, codec, store, parts, unique) -> None:
    """The warehouse's arrival check: a read stored in an active plate range is in held_reads at once."""
    audit, publisher = parts
    hold = holds.place(settings, audit, publisher, case=f"CASE-{unique}", reason="abduction", user="det1",
                       plate="3ARR333", range_from=NOW - timedelta(days=600), range_to=NOW - timedelta(days=450))
    holds.apply(store, settings, [hold])
    ranges = holds.ActiveRanges().load(store, settings)  # as a restarted warehouse loads it
    arriving = _reads(f"{unique}-arr", 2, 500, plate="3ARR333") + _reads(f"{unique}-other", 1, 500, plate="3OTH333")
    _store_aged(store, arriving, ingested_days=500)  # worst case: the TTL may act on all three at once
    assert holds.cover(store, settings, ranges.covering(arriving)) == 2
    _ttl_pass(store)
    assert _ids(store) == {arriving[0].read_id, arriving[1].read_id}
    counts = retention.enforce(store, settings, codec, audit)
    assert (counts["purged"], counts["held_kept"]) == (0, 2)
    released = hold.model_copy(update={"status": "RELEASED", "released_at": NOW, "released_by": "lt"})
    ranges.update([released])
    assert ranges.covering(arriving) == []


def test_hold_coverage_says_when_the_reads_are_gone(settings, codec, store, parts, unique) -> None:
    audit, publisher = parts
    present = _reads(f"{unique}-here", 1, 10)
    sink.write_new(store, "alpr", sink.READS_SPEC, present)
    by_id = holds.place(settings, audit, publisher, case=f"C-{unique}", reason="r", user="det1",
                        read_ids=[present[0].read_id, f"{unique}-purged"])
    found = holds.coverage(store, settings, by_id)
    assert (found["stored_reads"], found["missing_read_ids"]) == (1, 1) and "not in the store" in found["warning"]
    by_range = holds.place(settings, audit, publisher, case=f"C-{unique}", reason="r", user="det1",
                           plate="0GONE00", range_from=NOW - timedelta(days=9), range_to=NOW)
    assert "no stored read" in holds.coverage(store, settings, by_range)["warning"]


def test_retention_below_one_year_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="ALPR_RETENTION_DAYS.*at least 365"):
        load_settings(retention_days=364, data_dir=tmp_path)


def test_ttl_follows_the_retention_setting(settings, store) -> None:
    longer = settings.model_copy(update={"retention_days": 730})
    assert retention.ensure_ttl(store, longer) is True
    ddl = store.scalar("SELECT create_table_query FROM system.tables WHERE database='alpr' AND name='reads'")
    assert "greatest(captured_at, ingested_at)) + toIntervalDay(760)" in ddl  # 730 + the 30-day margin
    assert "dictHas('alpr.held_reads_dict'" in ddl
    alerts = store.scalar("SELECT create_table_query FROM system.tables WHERE database='alpr' AND name='alerts'")
    assert "toIntervalDay(760)" in alerts and "dictHas('alpr.held_reads_dict'" in alerts
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
