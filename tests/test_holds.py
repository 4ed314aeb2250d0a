"""Evidence holds: placed and released through the CLI, audited first, applied to the store."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from alpr.warehouse import holds
from alpr.core import kafka
from alpr.warehouse import sink
from alpr.audit.trail import AuditLog, AuditUnavailable, read_events
from alpr.ops.broker import free_port
from alpr.cli import cli
from alpr.core.settings import settings as cached_settings
from alpr.schemas import Codec
from tests.people import PASSWORD, publish_user
from tests.records import read


@pytest.fixture
def alpr(settings, monkeypatch):
    """Run `alpr ...` in this process against the test broker and data directory."""
    monkeypatch.setenv("ALPR_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("ALPR_DATA_DIR", str(settings.data_dir))
    cached_settings.cache_clear()
    runner = CliRunner()
    for name, role in (("sgt1", "ANALYST"), ("lt2", "SUPERVISOR"), ("clerk-u", "ANALYST")):
        publish_user(settings, Codec(), name, role=role)

    def run(*args: str):
        """Logs in as the --user given (every holds command needs a login)."""
        args = [*args, "--password-stdin"] if "--user" in args else list(args)
        return runner.invoke(cli, args, input=f"{PASSWORD}\n", catch_exceptions=False)

    yield run
    cached_settings.cache_clear()


def test_add_list_release_through_the_cli(alpr, settings, codec, unique) -> None:
    case = f"CASE-{unique}"
    added = alpr("holds", "add", "--case", case, "--reason", "armed robbery", "--user", "sgt1",
                 "--plate", "7abc-123", "--from", "2026-01-01", "--to", "2026-02-01T00:00:00Z")
    assert added.exit_code == 0, added.output
    hold = json.loads(added.stdout)
    assert (hold["plate"], hold["status"], hold["placed_by"]) == ("7ABC123", "ACTIVE", "sgt1")
    assert hold["range_from"].startswith("2026-01-01T00:00:00")

    listed = [json.loads(line) for line in alpr("holds", "list", "--user", "sgt1").stdout.splitlines()]
    assert hold["hold_id"] in {h["hold_id"] for h in listed}

    released = alpr("holds", "release", "--case", case, "--reason", "charges dropped", "--user", "lt2")
    assert released.exit_code == 0, released.output
    assert json.loads(released.stdout)["released_by"] == "lt2"
    assert hold["hold_id"] not in {json.loads(x)["hold_id"] for x in alpr("holds", "list", "--user", "sgt1").stdout.splitlines()}
    everything = {json.loads(x)["hold_id"]: json.loads(x) for x in alpr("holds", "list", "--all", "--user", "sgt1").stdout.splitlines()}
    assert everything[hold["hold_id"]]["status"] == "RELEASED"
    assert everything[hold["hold_id"]]["release_reason"] == "charges dropped"

    events = [e for _, e in read_events(settings, codec) if e.case_number == case]
    assert [(e.action, e.actor) for e in events] == [("HOLD_ADD", "sgt1"), ("HOLD_RELEASE", "lt2")]
    refused = alpr("holds", "release", "--case", case, "--reason", "x", "--user", "sgt1")
    assert refused.exit_code != 0 and "needs supervisor" in refused.output  # analysts place, supervisors release
    assert "7ABC123" in events[0].subject

    again = alpr("holds", "release", "--case", case, "--reason", "x", "--user", "lt2")
    assert again.exit_code != 0 and f"no active hold for case {case}" in again.output


@pytest.mark.parametrize("args, message", [
    (["--read-id", "r1", "--plate", "7ABC123", "--from", "2026-01-01", "--to", "2026-01-02"], "not both"),
    (["--plate", "7ABC123", "--from", "2026-01-01"], "needs --plate, --from and --to"),
    (["--plate", "7ABC123", "--from", "2026-01-02", "--to", "2026-01-01"], "--from must be before --to"),
    (["--plate", "7ABC123", "--from", "2026-01-01T10:00", "--to", "2026-01-02"], "has no timezone"),
    ([], "give either --read-id"),
])
def test_bad_hold_refused_with_one_line(alpr, args, message, unique) -> None:
    result = alpr("holds", "add", "--case", f"C-{unique}", "--reason", "r", "--user", "clerk-u", *args)
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines()[-1].startswith("alpr: error: ") and message in result.stderr


def test_no_audit_no_hold(settings, codec, unique) -> None:
    """The audit event is written before the hold is published; no audit, no hold."""
    dead = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    audit = AuditLog(dead, codec, "test-holds", ack_timeout=1.0)
    publisher = kafka.Publisher(settings, codec, "test-holds")
    with pytest.raises(AuditUnavailable):
        holds.place(settings, audit, publisher, case=f"C-{unique}", reason="r", user="u", read_ids=["r1"])
    assert not [h for h in holds.current(settings, codec).values() if h.case_number == f"C-{unique}"]


def test_apply_fills_and_empties_held_reads(settings, store, unique) -> None:
    now = datetime.now(timezone.utc)
    reads = [read(i).model_copy(update={"read_id": f"{unique}-{i}", "captured_at": now - timedelta(hours=i)})
             for i in range(4)]
    sink.write_new(store, "alpr", sink.READS_SPEC, reads)
    by_plate = holds.EvidenceHold(
        hold_id=f"h-{unique}", case_number="C1", reason="r", agency="RIC", plate="7ABC123",
        range_from=now - timedelta(hours=2, minutes=30), range_to=now, placed_by="u", placed_at=now,
        status="ACTIVE")
    by_id = holds.EvidenceHold.model_validate({
        **by_plate.model_dump(), "hold_id": f"h2-{unique}", "plate": None, "range_from": None, "range_to": None,
        "read_ids": [f"{unique}-3", "not-yet-stored"]})
    result = holds.apply(store, settings, [by_plate, by_id])
    assert result.held_rows_added == 5
    assert holds.apply(store, settings, [by_plate, by_id]).held_rows_added == 0  # idempotent
    held = store.rows("SELECT read_id FROM alpr.reads WHERE dictHas('alpr.held_reads_dict', tuple(read_id)) "
                      "ORDER BY read_id")
    assert [r["read_id"] for r in held] == [f"{unique}-{i}" for i in range(4)]

    gone = holds.EvidenceHold.model_validate({**by_plate.model_dump(), "status": "RELEASED", "released_by": "v",
                                              "released_at": now, "release_reason": "closed"})
    assert holds.apply(store, settings, [gone]).released == 1
    left = store.rows("SELECT read_id FROM alpr.held_reads ORDER BY read_id")
    assert [r["read_id"] for r in left] == [f"{unique}-3", "not-yet-stored"]
    status = store.scalar(f"SELECT status FROM alpr.holds FINAL WHERE hold_id = 'h-{unique}'")
    assert status == "RELEASED"


def test_the_applier_and_the_arrival_matcher_never_add_the_same_rows_twice(settings, store, unique) -> None:
    """In the warehouse the holds applier (expanding a range over stored reads) and the reads
    sink (matching arrivals against the same range) can both see a read. Each reads what
    held_reads has and adds the rest; interleaved, both added it (CI counted 6 rows for 3).
    Here cover() is started while apply() is between its look and its insert: it must wait."""
    import threading

    now = datetime.now(timezone.utc)
    reads = [read(i).model_copy(update={"read_id": f"{unique}-{i}", "captured_at": now}) for i in range(3)]
    sink.write_new(store, "alpr", sink.READS_SPEC, reads)
    hold = holds.EvidenceHold(
        hold_id=f"h-{unique}", case_number="C1", reason="r", agency="RIC", plate="7ABC123",
        range_from=now - timedelta(hours=1), range_to=now + timedelta(hours=1), placed_by="u", placed_at=now,
        status="ACTIVE")
    inside, covered = threading.Event(), threading.Event()
    insert = store.insert_arrow
    overtaken: list[bool] = []

    def paused_insert(table, data):
        if table.endswith("held_reads") and not inside.is_set():
            inside.set()
            # cover() runs now if nothing stops it; a bounded wait for it to finish (it must not).
            overtaken.append(covered.wait(1.0))
        return insert(table, data)

    store.insert_arrow = paused_insert
    try:
        applier = threading.Thread(target=holds.apply, args=(store, settings, [hold]))
        applier.start()
        assert inside.wait(60)
        pairs = [(r.read_id, hold.hold_id, "C1") for r in reads]
        matcher = threading.Thread(target=lambda: (holds.cover(store, settings, pairs), covered.set()))
        matcher.start()
        applier.join(60)
        matcher.join(60)
    finally:
        store.insert_arrow = insert
    assert overtaken == [False], "cover() wrote held_reads while apply() was between its look and its insert"
    assert covered.is_set()
    assert store.scalar(f"SELECT count() FROM alpr.held_reads WHERE hold_id = 'h-{unique}'") == 3
