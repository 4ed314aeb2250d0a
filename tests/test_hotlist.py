"""Hotlist CSV import (diff publishing, malformed rows, audit first) and the in-memory index."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from alpr.alerting import hotlist
from alpr.core import kafka
from alpr.audit.trail import read_events
from alpr.ops.broker import DevBroker, free_port
from alpr.alerting.partials import BadInput
from alpr.core.settings import load_settings
from alpr.core.topics import HOTLIST, apply_topics
from alpr.schemas import Codec, HotlistEntry

HEADER = "plate,state,reason,source,case_number,expires\n"


@pytest.fixture(scope="module")
def mod_settings(tmp_path_factory):
    """A fresh broker: the import diffs against the whole topic, so nothing else may write to it."""
    work = tmp_path_factory.mktemp("hotlist")
    broker = DevBroker("127.0.0.1", free_port(), work / "broker.log").start()
    s = load_settings(kafka_bootstrap=broker.bootstrap, data_dir=work / "data")
    apply_topics(kafka.admin(s), replication_factor=1)
    yield s
    broker.stop(1.0)  # in-memory broker: nothing to flush, no need to wait for a clean stop


def _csv(tmp_path: Path, name: str, rows: str) -> Path:
    p = tmp_path / name
    p.write_text(HEADER + rows)
    return p


def _topic(settings, codec) -> dict[tuple[int, int], tuple[str, HotlistEntry | None, int]]:
    """Every message on the hotlist topic: (partition, offset) -> (key, entry or None, timestamp ms)."""
    out = {}
    for p in kafka.partitions_of(settings, HOTLIST):
        for m in kafka.read_to_end(settings, HOTLIST, p, idle=0.3):
            out[(p, m.offset())] = (m.key().decode(), None if m.value() is None
                                    else codec.decode(m.value(), HotlistEntry), m.timestamp()[1])
    return out


def test_malformed_row_is_reported_with_its_line_and_nothing_is_published(mod_settings, tmp_path):
    codec = Codec()
    before = len(_topic(mod_settings, codec))
    f = _csv(tmp_path, "bad.csv", "7ABC123,CA,STOLEN_VEHICLE,STATE,24-1,2030-01-01\n"
                                  "8XYZ999,CA,JOYRIDE,STATE,24-2,\n"
                                  "9QRS111,CA,WARRANT,STATE,24-3,tomorrow\n")
    with pytest.raises(BadInput) as exc:
        hotlist.import_csv(mod_settings, codec, f, source="STATE", user="clerk1")
    msg = str(exc.value)
    assert "line 3" in msg and "JOYRIDE" in msg and "line 4" in msg and "nothing imported" in msg
    assert "line 2" not in msg
    assert len(_topic(mod_settings, codec)) == before
    refused = [e for _, e in read_events(mod_settings, codec) if e.action == "HOTLIST_IMPORT"]
    assert refused[-1].outcome.value == "REFUSED" and refused[-1].actor == "clerk1"


def test_skip_bad_imports_good_rows_and_reports_bad(mod_settings, tmp_path):
    codec = Codec()
    f = _csv(tmp_path, "skip.csv", "5SKP555,AZ,WARRANT,FEDERAL,F-1,\nNOT A PLATE!!,AZ,WARRANT,FEDERAL,F-2,\n")
    result = hotlist.import_csv(mod_settings, codec, f, source="FEDERAL", user="clerk1", skip_bad=True)
    assert [e.key for e in result.added] == ["AZ:5SKP555"]
    assert result.summary()["bad_rows"][0]["line"] == 3
    assert "AZ:5SKP555" in hotlist.current(mod_settings, codec)


def test_import_publishes_only_the_difference(mod_settings, tmp_path):
    codec = Codec()
    local = hotlist.make_entry(plate="1LOC111", state="CA", reason="OTHER", source="LOCAL", case_number="L-1",
                               expires=None, agency="RIC", user="sgt1")
    hotlist.add(mod_settings, codec, local)
    v1 = _csv(tmp_path, "v1.csv", "1AAA111,CA,STOLEN_VEHICLE,STATE,S-1,2030-01-01\n"
                                  "2BBB222,CA,STOLEN_PLATE,STATE,S-2,\n"
                                  "3CCC333,CA,AMBER_ALERT,STATE,S-3,\n")
    r1 = hotlist.import_csv(mod_settings, codec, v1, source="STATE", user="clerk1")
    assert (len(r1.added), len(r1.changed), len(r1.removed)) == (3, 0, 0)
    mark = set(_topic(mod_settings, codec))
    v2 = _csv(tmp_path, "v2.csv", "1AAA111,CA,STOLEN_VEHICLE,STATE,S-1,2030-01-01\n"   # same
                                  "2BBB222,CA,WARRANT,STATE,S-2b,\n"                    # changed
                                  "4DDD444,CA,MISSING_PERSON,STATE,S-4,2029-06-30\n")   # new; 3CCC333 gone
    r2 = hotlist.import_csv(mod_settings, codec, v2, source="STATE", user="clerk2")
    assert r2.summary() | {"bad_rows": []} == {"source": "STATE", "rows": 3, "added": 1, "changed": 1,
                                                "removed": 1, "unchanged": 1, "bad_rows": [],
                                                "kept_removed": [], "overrides_local_removals": []}
    published = [v for k, v in _topic(mod_settings, codec).items() if k not in mark]
    assert sorted((k, e is None) for k, e, _ in published) == [("CA:2BBB222", False), ("CA:3CCC333", True),
                                                               ("CA:4DDD444", False)]
    changed = next(e for k, e, _ in published if k == "CA:2BBB222")
    assert changed.reason.value == "WARRANT" and changed.entered_by == "clerk2"
    new = next(e for k, e, _ in published if k == "CA:4DDD444")
    assert new.expires_at == datetime(2029, 7, 1, tzinfo=timezone.utc)  # through the named day
    now = hotlist.current(mod_settings, codec)
    assert "CA:1LOC111" in now and "CA:3CCC333" not in now  # another source's entry is left alone
    # The summary audit event is on the audit topic, with counts, no later than the first change.
    audit = [e for _, e in read_events(mod_settings, codec) if e.action == "HOTLIST_IMPORT" and e.actor == "clerk2"]
    assert audit[-1].outcome.value == "ALLOWED"
    assert (audit[-1].details["added"], audit[-1].details["changed"], audit[-1].details["removed"]) == ("1", "1", "1")
    assert audit[-1].occurred_at.timestamp() * 1000 <= min(ts for _, _, ts in published) + 1


def test_file_with_no_valid_rows_does_not_empty_a_list(mod_settings, tmp_path):
    codec = Codec()
    hotlist.import_csv(mod_settings, codec, _csv(tmp_path, "l.csv", "6LLL666,OR,OTHER,LOCAL,X-1,\n"),
                       source="LOCAL", user="clerk1")
    with pytest.raises(BadInput, match="allow-empty"):
        hotlist.import_csv(mod_settings, codec, _csv(tmp_path, "empty.csv", ""), source="LOCAL", user="clerk1")
    assert "OR:6LLL666" in hotlist.current(mod_settings, codec)


def test_header_and_duplicate_rows_are_refused(tmp_path):
    (tmp_path / "h.csv").write_text("plate,state,reason\n1A,CA,OTHER\n")
    with pytest.raises(BadInput, match="line 1.*missing source"):
        hotlist.diff_csv(tmp_path / "h.csv", "STATE", {}, agency="RIC", user="u")
    f = _csv(tmp_path, "d.csv", "1AB,CA,OTHER,STATE,1,\n1-AB,ca,OTHER,STATE,2,\n1AB,CA,OTHER,LOCAL,3,\n")
    r = hotlist.diff_csv(f, "STATE", {}, agency="RIC", user="u")
    assert [n for n, _ in r.bad] == [3, 4] and "already on line 2" in r.bad[0][1] and "LOCAL" in r.bad[1][1]


def test_index_lookup_confusions_and_expiry():
    now = datetime.now(timezone.utc)
    idx = hotlist.HotlistIndex()
    live = hotlist.make_entry(plate="8BS0", state="CA", reason="OTHER", source="LOCAL", case_number="1",
                              expires=now + timedelta(days=1), agency="A", user="u")
    old = hotlist.make_entry(plate="1II1", state="CA", reason="OTHER", source="LOCAL", case_number="2",
                             expires=now - timedelta(seconds=1), agency="A", user="u")
    idx.put(live.key, live)
    idx.put(old.key, old)
    assert idx.lookup("8BS0", now) == [live] and idx.lookup("1II1", now) == []
    assert [(e.plate, swap) for e, swap in idx.possible("BBS0", now)] == [("8BS0", "B/8")]
    assert idx.lookup("8BSO", now) == [live] and idx.possible("8BSO", now) == []  # O and 0 are one character
    assert idx.possible("8BS0", now) == [] and idx.possible("BB50", now) == []  # two substitutions: no
    idx.put(live.key, None)
    assert idx.lookup("8BS0", now) == [] and len(idx) == 1


def test_hotlist_cli_logs_its_user_in(mod_settings, monkeypatch, tmp_path):
    """Only a trained member with the right password changes the list, and the audit names them."""
    from click.testing import CliRunner

    from alpr.cli import cli
    from alpr.core.settings import settings as cached
    from tests.people import PASSWORD, publish_user

    codec = Codec()
    publish_user(mod_settings, codec, "clerk-cli")
    publish_user(mod_settings, codec, "rookie-cli", trained_days_ago=None)
    monkeypatch.setenv("ALPR_KAFKA_BOOTSTRAP", mod_settings.kafka_bootstrap)
    cached.cache_clear()
    args = ["hotlist", "add", "4CLI123", "--state", "CA", "--reason", "STOLEN_PLATE", "--case", "24-77",
            "--password-stdin", "--user"]
    try:
        before = len(_topic(mod_settings, codec))
        wrong = CliRunner().invoke(cli, [*args, "clerk-cli"], input="not the password\n")
        untrained = CliRunner().invoke(cli, [*args, "rookie-cli"], input=f"{PASSWORD}\n")
        assert wrong.exit_code != 0 and "password" in wrong.output
        assert untrained.exit_code != 0 and "training" in untrained.output
        assert len(_topic(mod_settings, codec)) == before  # refused: nothing published
        ok = CliRunner().invoke(cli, [*args, "clerk-cli"], input=f"{PASSWORD}\n")
        assert ok.exit_code == 0, ok.output
    finally:
        cached.cache_clear()
    added = [e for _, e, _ in _topic(mod_settings, codec).values() if e is not None and e.plate == "4CLI123"]
    assert [e.entered_by for e in added] == ["clerk-cli"]
    actions = [(ev.actor, ev.action, ev.outcome.value) for _, ev in read_events(mod_settings, codec)]
    assert ("clerk-cli", "LOGIN", "REFUSED") in actions and ("rookie-cli", "LOGIN", "REFUSED") in actions
    assert ("clerk-cli", "LOGIN", "ALLOWED") in actions and ("clerk-cli", "HOTLIST_ADD", "ALLOWED") in actions


def test_import_carries_the_importing_users_agency(mod_settings, tmp_path):
    """An SPD detective's import is SPD's entries (and SPD's audit event), not the installation's."""
    codec = Codec()
    f = _csv(tmp_path, "spd.csv", "7SPD777,NV,WARRANT,FEDERAL,SPD-9,\n")
    result = hotlist.import_csv(mod_settings, codec, f, source="FEDERAL", user="det.spd", agency="SPD")
    assert [e.agency for e in result.added] == ["SPD"]
    assert hotlist.current(mod_settings, codec)["NV:7SPD777"].agency == "SPD"
    event = [e for _, e in read_events(mod_settings, codec) if e.action == "HOTLIST_IMPORT"][-1]
    assert (event.actor, event.agency) == ("det.spd", "SPD")
    assert mod_settings.agency == "RIC"


def test_removal_of_an_extract_entry_is_remembered_by_the_next_import(mod_settings, tmp_path):
    codec = Codec()
    rows = "5REM555,UT,STOLEN_VEHICLE,FEDERAL,F-55,2030-01-01\n6KEP666,UT,WARRANT,FEDERAL,F-66,\n"
    hotlist.import_csv(mod_settings, codec, _csv(tmp_path, "f1.csv", rows), source="FEDERAL", user="clerk1")
    removed = hotlist.remove(mod_settings, codec, key="UT:5REM555", user="sgt1", reason="recovered, owner called",
                             agency="SPD")
    assert removed.remembered and "FEDERAL" in removed.warning and "remembered" in removed.warning
    gone = hotlist.current(mod_settings, codec, hotlist.REMOVALS)["UT:5REM555"]
    assert (gone.entered_by, gone.agency, gone.notes) == ("sgt1", "SPD", "removed: recovered, owner called")
    # The same extract again: the removal stands, and the import says so.
    again = hotlist.import_csv(mod_settings, codec, _csv(tmp_path, "f2.csv", rows), source="FEDERAL", user="clerk1")
    assert again.kept_removed == ["UT:5REM555"] and again.added == [] and again.overridden == []
    assert "UT:5REM555" not in hotlist.current(mod_settings, codec)
    # The extract's entry changes (a new case): new information, back on the list, the override named.
    changed = rows.replace("F-55", "F-56")
    third = hotlist.import_csv(mod_settings, codec, _csv(tmp_path, "f3.csv", changed), source="FEDERAL",
                               user="clerk1")
    assert third.overridden == ["UT:5REM555"] and [e.key for e in third.added] == ["UT:5REM555"]
    assert third.summary()["overrides_local_removals"] == ["UT:5REM555"]
    assert "UT:5REM555" in hotlist.current(mod_settings, codec)
    assert "UT:5REM555" not in hotlist.current(mod_settings, codec, hotlist.REMOVALS)


def test_removal_of_a_local_entry_is_not_remembered(mod_settings):
    codec = Codec()
    e = hotlist.make_entry(plate="8LOC888", state="CA", reason="OTHER", source="LOCAL", case_number="L-8",
                           expires=None, agency="SPD", user="sgt1")
    hotlist.add(mod_settings, codec, e)
    removed = hotlist.remove(mod_settings, codec, key=e.key, user="sgt1", reason="done")
    assert not removed.remembered and removed.warning is None
    assert e.key not in hotlist.current(mod_settings, codec, hotlist.REMOVALS)


def test_index_decodes_on_lookup_and_drops_what_it_cannot_trust():
    codec = Codec()
    now = datetime.now(timezone.utc)
    idx = hotlist.HotlistIndex(codec)
    good = hotlist.make_entry(plate="1RAW111", state="CA", reason="OTHER", source="LOCAL", case_number="1",
                              expires=None, agency="A", user="u")
    idx.put_raw(good.key, codec.encode(good, HOTLIST))
    idx.put_raw("CA:2BAD222", b"\xc3\x01garbage")
    idx.put_raw("CA:3LIE333", codec.encode(good, HOTLIST))  # a key that does not name its entry's plate
    assert len(idx) == 3
    assert idx.lookup("1RAW111", now) == [good] and idx.possible("1RAWIII", now) == []
    assert idx.lookup("2BAD222", now) == [] and idx.lookup("3LIE333", now) == []
    assert len(idx) == 1 and idx.undecodable == 2
    idx.put_raw(good.key, None)
    assert idx.lookup("1RAW111", now) == [] and len(idx) == 0


def test_a_plate_entered_with_the_letter_o_matches_the_us_readers_zero_exactly():
    """The US reader writes O as 0; an entry typed 'ABCO123' must still be an EXACT hit for 'ABC0123',
    and the O/0 confusion must not also surface as a POSSIBLE hit for the same entry."""
    now = datetime.now(timezone.utc)
    index = hotlist.HotlistIndex()
    entry = hotlist.make_entry(plate="ABCO123", state="CA", reason="STOLEN_VEHICLE", source="LOCAL",
                               case_number="26-1", expires=None, agency="SPD", user="clerk", now=now)
    index.put(entry.key, entry)
    assert [e.plate for e in index.lookup("ABC0123", now)] == ["ABCO123"]
    assert [e.plate for e in index.lookup("ABCO123", now)] == ["ABCO123"]
    assert index.possible("ABC0123", now) == []
    assert [(e.plate, swap) for e, swap in index.possible("A8C0123", now)] == [("ABCO123", "8/B")]
    assert index.get(entry.key) == entry
    index.put(entry.key, None)
    assert index.lookup("ABC0123", now) == []
