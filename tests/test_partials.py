"""Partial-plate patterns: normalisation, the indexed matcher (checked against the naive scan), the topic."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from alpr.core import kafka
from alpr.alerting import partials
from alpr.audit.trail import read_events
from alpr.alerting.partials import BadInput, PatternIndex, compile_all, normalize_pattern, scan_match
from alpr.core.topics import PARTIALS
from alpr.schemas import Codec, PartialPlate

NOW = datetime.now(timezone.utc)
ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def _pp(pid: str, pattern: str, expires: datetime | None = None) -> PartialPlate:
    return PartialPlate(pattern_id=pid, pattern=pattern, case_number="C", incident_type="ROBBERY", agency="A",
                        entered_by="u", entered_at=NOW, expires_at=expires or NOW + timedelta(days=30))


def test_normalize():
    assert normalize_pattern(" 7ab-?12** ") == "7AB?12*"
    for bad in ("7A_B", "**", "?A?", "X" * 17):
        with pytest.raises(BadInput):
            normalize_pattern(bad)


def _random_pattern(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(2, 8)):
        r = rng.random()
        out.append("?" if r < 0.2 else "*" if r < 0.3 else rng.choice(ALPHABET))
    p = "".join(out)
    try:
        return normalize_pattern(p)
    except BadInput:
        return "7AB*"


def test_index_agrees_with_the_naive_scan():
    rng = random.Random(7)
    entries = [_pp(f"p{i}", _random_pattern(rng)) for i in range(1500)]
    idx = PatternIndex()
    for e in entries:
        idx.put(e.pattern_id, e)
    plates = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(2, 8))) for _ in range(1500)]
    plates += [e.pattern.replace("?", "Q").replace("*", "ZZ") for e in entries[:300]]  # guaranteed hits
    compiled, hits = compile_all(entries), 0
    for plate in plates:
        want = sorted(e.pattern_id for e in scan_match(compiled, plate))
        got = [e.pattern_id for e in idx.match(plate, NOW)]
        assert got == want, plate
        hits += bool(got)
    assert hits >= 300
    # and the index looks at few candidates, not everything
    assert sum(len(idx.candidates(p)) for p in plates[:1000]) / 1000 < 0.05 * len(entries)


def test_index_expiry_replace_and_remove():
    idx = PatternIndex()
    idx.put("a", _pp("a", "7AB?12*"))
    idx.put("b", _pp("b", "*X9", NOW - timedelta(seconds=1)))
    assert [e.pattern_id for e in idx.match("7ABQ123", NOW)] == ["a"]
    assert idx.match("7ABQ12", NOW)[0].pattern_id == "a" and idx.match("7AB12", NOW) == []
    assert idx.match("11X9", NOW) == []  # expired
    idx.put("a", _pp("a", "8*"))  # replaced: the old pattern no longer matches
    assert idx.match("7ABQ123", NOW) == [] and idx.match("8ZZ", NOW)[0].pattern_id == "a"
    idx.put("a", None)
    assert idx.match("8ZZ", NOW) == [] and len(idx) == 1


def test_add_list_remove_on_the_topic_audited(settings, codec: Codec):
    e = partials.add(settings, codec, pattern="6tr?9*", case_number="EV-77", incident_type="hit and run",
                     user="det2")
    assert e.pattern == "6TR?9*" and e.incident_type == "HIT AND RUN"
    assert timedelta(days=29) < e.expires_at - e.entered_at <= timedelta(days=settings.partial_expiry_days)
    assert partials.current(settings, codec)[e.pattern_id] == e
    with pytest.raises(BadInput, match="case"):
        partials.add(settings, codec, pattern="6TR?9*", case_number=" ", incident_type="X", user="det2")
    partials.remove(settings, codec, pattern_id=e.pattern_id, user="det2", reason="vehicle found")
    assert e.pattern_id not in partials.current(settings, codec)
    with pytest.raises(BadInput, match="no partial plate"):
        partials.remove(settings, codec, pattern_id=e.pattern_id, user="det2", reason="again")
    actions = [(ev.action, ev.subject) for _, ev in read_events(settings, codec) if ev.actor == "det2"]
    assert actions == [("PARTIAL_ADD", e.pattern_id), ("PARTIAL_REMOVE", e.pattern_id)]
    tomb = [m for m in kafka.read_to_end(settings, PARTIALS, idle=0.3) if m.key() == e.pattern_id.encode()]
    assert tomb[-1].value() is None


def test_pattern_carries_the_entering_users_agency(settings, codec: Codec):
    e = partials.add(settings, codec, pattern="4SP?D*", case_number="SPD-1", incident_type="ROBBERY",
                     user="det.spd", agency="SPD")
    assert e.agency == "SPD" and partials.current(settings, codec)[e.pattern_id].agency == "SPD"
    event = [ev for _, ev in read_events(settings, codec) if ev.subject == e.pattern_id][-1]
    assert (event.actor, event.agency) == ("det.spd", "SPD")
