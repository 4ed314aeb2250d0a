"""Evidence holds: reads kept past retention because they are, or will likely be, evidence.

Placing or releasing a hold is audited first (HOLD_ADD / HOLD_RELEASE, actor = the
person) and then published to the compacted `alpr.holds` topic (EvidenceHold keyed
by hold_id; the newest version wins). The topic is the record of truth: placing a
hold never needs the store, so it works while `alpr warehouse` owns the embedded one.

The warehouse applies holds to ClickHouse (`apply`): the `holds` table gets the
newest version, `held_reads` gets the read ids an ACTIVE hold covers, a RELEASED
hold's rows leave `held_reads`, and the `held_reads_dict` dictionary (what the
reads TTL and the retention purge consult) is reloaded.

A plate + time-range hold covers its reads whenever they arrive:
- reads already stored when it is applied are added to `held_reads`;
- reads that arrive later (a partner import, a sink catching up) are matched by the
  warehouse's reads sink against the active ranges (`ActiveRanges`) as they are
  stored, and added then;
- the purge itself (`retention.enforce`) carries every range as a clause of its
  DELETE predicate, so nothing in a held range is deleted even between the two.
A read is never expired at insert (030_ttl_safety_net.sql), so a hold placed before
or after its reads arrive protects them either way.

`coverage` says what a hold finds in the store, so a hold on reads that are
already gone (purged, or never arrived) says so instead of looking successful.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from alpr.core import kafka
from alpr.audit.trail import AuditLog, publish_audited
from alpr.core.errors import AlprError, Unavailable
from alpr.core.kafka import Publisher
from alpr.core.logs import get_log
from alpr.core.settings import Settings
from alpr.core.sql import in_list, lit, ts_lit
from alpr.core.store import Store
from alpr.core.topics import HOLDS
from alpr.schemas import Codec, EvidenceHold, UndecodableRecord, normalize_plate
from alpr.schemas.models import PLATE_RE, HoldStatus

log = get_log(__name__)
HOLD_ADD, HOLD_RELEASE = "HOLD_ADD", "HOLD_RELEASE"
MAX_READ_IDS = 100_000
# One writer of `held_reads` at a time in a process: the holds applier, the reads sink's
# arrival matching and the daily purge each read what is there and add what is missing;
# interleaved, two of them add the same rows (counted twice until a merge).
_HELD_WRITES = threading.Lock()


def _required(name: str, value: str | None) -> str:
    value = (value or "").strip()
    if not value:
        raise AlprError(f"--{name} is required and must not be empty")
    return value


def place(settings: Settings, audit: AuditLog, publisher: Publisher, *, case: str, reason: str, user: str,
          read_ids: Sequence[str] = (), plate: str | None = None, range_from: datetime | None = None,
          range_to: datetime | None = None, now: datetime | None = None) -> EvidenceHold:
    """Validate, audit, publish one ACTIVE hold; returns it once the broker has it."""
    case, reason, user = _required("case", case), _required("reason", reason), _required("user", user)
    ids = sorted({i.strip() for i in read_ids if i.strip()})
    by_range = plate is not None or range_from is not None or range_to is not None
    if bool(ids) == by_range:
        raise AlprError("give either --read-id (one or more) or --plate with --from and --to, not both")
    if by_range:
        if plate is None or range_from is None or range_to is None:
            raise AlprError("a plate hold needs --plate, --from and --to")
        plate = normalize_plate(plate)
        if not PLATE_RE.match(plate):
            raise AlprError("--plate must be 1-10 letters or digits")
        if range_from >= range_to:
            raise AlprError("--from must be before --to")
    if len(ids) > MAX_READ_IDS:
        raise AlprError(f"at most {MAX_READ_IDS} read ids per hold; split the case into several holds")
    hold = EvidenceHold(hold_id=uuid.uuid4().hex, case_number=case, reason=reason, agency=settings.agency,
                        read_ids=ids, plate=plate, range_from=range_from, range_to=range_to, placed_by=user,
                        placed_at=now or datetime.now(timezone.utc), status=HoldStatus.ACTIVE)
    scope = (f"{len(ids)} read ids" if ids else
             f"plate {plate} from {range_from.isoformat()} to {range_to.isoformat()}")
    publish_audited(audit, publisher, [(HOLDS, hold.hold_id, hold)], actor=user, agency=settings.agency,
                    action=HOLD_ADD, case_number=case, purpose=reason, subject=f"hold {hold.hold_id}: {scope}",
                    rows=len(ids) or None, details={"hold_id": hold.hold_id})
    log.info("hold.placed", hold_id=hold.hold_id, read_ids=len(ids), by_range=by_range)
    return hold


def release(settings: Settings, codec: Codec, audit: AuditLog, publisher: Publisher, *, case: str, reason: str,
            user: str, now: datetime | None = None) -> list[EvidenceHold]:
    """Release every ACTIVE hold of a case; its reads then fall under retention again."""
    case, reason, user = _required("case", case), _required("reason", reason), _required("user", user)
    active = [h for h in current(settings, codec).values()
              if h.case_number == case and h.status == HoldStatus.ACTIVE]
    if not active:
        raise AlprError(f"no active hold for case {case}")
    when = now or datetime.now(timezone.utc)
    released = [EvidenceHold.model_validate({**h.model_dump(), "status": HoldStatus.RELEASED, "released_by": user,
                                             "released_at": when, "release_reason": reason}) for h in active]
    publish_audited(audit, publisher, [(HOLDS, h.hold_id, h) for h in released], actor=user,
                    agency=settings.agency, action=HOLD_RELEASE, case_number=case, purpose=reason,
                    subject="holds " + ",".join(h.hold_id for h in released), details={"holds": str(len(released))})
    log.info("hold.released", holds=len(released))
    return released


def current(settings: Settings, codec: Codec) -> dict[str, EvidenceHold]:
    """The newest version of every hold on the topic (read to its real end).

    An undecodable hold record is an error, not a skip: a purge must never run on a
    partial view of the holds (fail closed).
    """
    out: dict[str, EvidenceHold] = {}
    latest, _ = kafka.read_compacted(settings, HOLDS, idle=0.5)
    for msg in latest.values():
        if msg.value() is None:  # tombstone
            continue
        try:
            hold = codec.decode(msg.value(), EvidenceHold)
        except UndecodableRecord as exc:
            raise Unavailable(f"{HOLDS} partition {msg.partition()} offset {msg.offset()} does not decode "
                              f"({exc.reason}); refusing to act on an incomplete set of holds") from None
        out[hold.hold_id] = hold
    return out


# --- applying holds to ClickHouse (the warehouse side)

@dataclass
class Applied:
    holds: int = 0
    held_rows_added: int = 0
    released: int = 0


def _version(h: EvidenceHold) -> datetime:
    return h.released_at if h.status == HoldStatus.RELEASED and h.released_at else h.placed_at


def apply(store: Store, settings: Settings, holds: Iterable[EvidenceHold]) -> Applied:
    """Bring `holds`, `held_reads` and the dictionary in line with these hold versions.

    Idempotent: applying the same holds again adds nothing. Plate-range holds are
    expanded against the reads present now.
    """
    with _HELD_WRITES:
        return _apply(store, settings, holds)


def _apply(store: Store, settings: Settings, holds: Iterable[EvidenceHold]) -> Applied:
    db = settings.clickhouse_database
    newest: dict[str, EvidenceHold] = {}
    for h in holds:
        if h.hold_id not in newest or _version(h) >= _version(newest[h.hold_id]):
            newest[h.hold_id] = h
    result = Applied(holds=len(newest))
    if not newest:
        return result
    ids = sorted(newest)
    stored = {r["hold_id"]: r["status"] for r in store.rows(
        f"SELECT hold_id, status FROM {db}.holds FINAL WHERE hold_id IN {in_list(ids)}")}
    rows = [h for h in newest.values() if stored.get(h.hold_id) != h.status.value]
    if rows:
        store.insert_arrow(f"{db}.holds", _holds_table(rows))

    have: dict[str, set[str]] = {}
    for r in store.rows(f"SELECT hold_id, read_id FROM {db}.held_reads WHERE hold_id IN {in_list(ids)}"):
        have.setdefault(r["hold_id"], set()).add(r["read_id"])
    add: list[tuple[str, str, str]] = []
    for h in newest.values():
        if h.status != HoldStatus.ACTIVE:
            continue
        wanted = set(h.read_ids)
        if h.plate is not None and h.range_from is not None and h.range_to is not None:
            wanted |= {r["read_id"] for r in store.rows(
                f"SELECT DISTINCT read_id FROM {db}.reads WHERE plate = {lit(h.plate)} "
                f"AND captured_at BETWEEN {ts_lit(h.range_from)} AND {ts_lit(h.range_to)}")}
        add += [(rid, h.hold_id, h.case_number) for rid in sorted(wanted - have.get(h.hold_id, set()))]
    if add:
        store.insert_arrow(f"{db}.held_reads", pa.table({
            "read_id": [a[0] for a in add], "hold_id": [a[1] for a in add], "case_number": [a[2] for a in add]}))
    result.held_rows_added = len(add)

    gone = [h.hold_id for h in newest.values() if h.status == HoldStatus.RELEASED and h.hold_id in have]
    if gone:
        store.command(f"ALTER TABLE {db}.held_reads DELETE WHERE hold_id IN {in_list(gone)} "
                      "SETTINGS mutations_sync = 2")  # wait until the rows are gone before reloading
    result.released = len(gone)
    if add or gone:
        reload_dictionary(store, settings)
    log.info("holds.applied", holds=result.holds, held_rows_added=result.held_rows_added, released=result.released)
    return result


def _covers_range(h: EvidenceHold) -> bool:
    return (h.status == HoldStatus.ACTIVE and h.plate is not None and h.range_from is not None
            and h.range_to is not None)


class ActiveRanges:
    """The active plate + time-range holds, for matching reads as the sink stores them (thread-safe).

    Loaded from the store's `holds` table when the warehouse starts (holds applied before
    a restart), then kept current by the holds applier.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_plate: dict[str, dict[str, EvidenceHold]] = {}

    def load(self, store: Store, settings: Settings) -> "ActiveRanges":
        db = settings.clickhouse_database
        rows = store.rows(f"SELECT hold_id, case_number, plate, range_from, range_to FROM {db}.holds FINAL "
                          "WHERE status = 'ACTIVE' AND plate IS NOT NULL")
        with self._lock:
            for r in rows:
                self._by_plate.setdefault(r["plate"], {})[r["hold_id"]] = EvidenceHold.model_validate({
                    "hold_id": r["hold_id"], "case_number": r["case_number"], "reason": "-", "agency": "-",
                    "plate": r["plate"], "range_from": _parse_ts(r["range_from"]),
                    "range_to": _parse_ts(r["range_to"]), "placed_by": "-", "placed_at": datetime.now(timezone.utc),
                    "status": HoldStatus.ACTIVE})
        return self

    def update(self, holds: Iterable[EvidenceHold]) -> None:
        with self._lock:
            for h in holds:
                for by_id in self._by_plate.values():
                    by_id.pop(h.hold_id, None)
                if _covers_range(h):
                    self._by_plate.setdefault(h.plate, {})[h.hold_id] = h

    def covering(self, reads: Iterable) -> list[tuple[str, str, str]]:
        """(read_id, hold_id, case_number) for each read an active range covers."""
        out = []
        with self._lock:
            if not any(self._by_plate.values()):
                return out
            for r in reads:
                for h in self._by_plate.get(r.plate, {}).values():
                    if h.range_from <= r.captured_at <= h.range_to:
                        out.append((r.read_id, h.hold_id, h.case_number))
        return out


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def cover(store: Store, settings: Settings, pairs: Sequence[tuple[str, str, str]]) -> int:
    """Add (read_id, hold_id, case) rows missing from `held_reads` and reload the dictionary."""
    if not pairs:
        return 0
    with _HELD_WRITES:
        return _cover(store, settings, pairs)


def _cover(store: Store, settings: Settings, pairs: Sequence[tuple[str, str, str]]) -> int:
    db = settings.clickhouse_database
    have = {(r["read_id"], r["hold_id"]) for r in store.rows(
        f"SELECT read_id, hold_id FROM {db}.held_reads WHERE read_id IN {in_list(sorted({p[0] for p in pairs}))}")}
    add = sorted({p for p in pairs if (p[0], p[1]) not in have})
    if add:
        store.insert_arrow(f"{db}.held_reads", pa.table({
            "read_id": [a[0] for a in add], "hold_id": [a[1] for a in add], "case_number": [a[2] for a in add]}))
        reload_dictionary(store, settings)
        log.info("holds.covered_on_arrival", held_rows_added=len(add))
    return len(add)


def coverage(store: Store, settings: Settings, hold: EvidenceHold) -> dict:
    """What a hold finds in the store now: stored reads it covers, and the read ids it names that are not there."""
    db = settings.clickhouse_database
    out: dict = {"hold_id": hold.hold_id, "stored_reads": 0}
    if hold.read_ids:
        found = {r["read_id"] for r in store.rows(
            f"SELECT DISTINCT read_id FROM {db}.reads WHERE read_id IN {in_list(hold.read_ids)}")}
        missing = [i for i in hold.read_ids if i not in found]
        out.update(stored_reads=len(found), missing_read_ids=len(missing), missing_examples=missing[:10])
        if missing:
            out["warning"] = (f"{len(missing)} of {len(hold.read_ids)} read ids are not in the store (already "
                              "purged, or not arrived yet); the hold keeps them only if they arrive")
    else:
        out["stored_reads"] = int(store.scalar(
            f"SELECT count() FROM {db}.reads FINAL WHERE plate = {lit(hold.plate)} "
            f"AND captured_at BETWEEN {ts_lit(hold.range_from)} AND {ts_lit(hold.range_to)}"))
        if not out["stored_reads"]:
            out["warning"] = ("no stored read of this plate in this range (already purged, or not arrived yet); "
                              "reads that arrive in the range will be kept")
    return out


def reload_dictionary(store: Store, settings: Settings) -> None:
    store.command(f"SYSTEM RELOAD DICTIONARY {settings.clickhouse_database}.held_reads_dict")


def sync(store: Store, settings: Settings, codec: Codec) -> Applied:
    """Apply every hold on the topic (re-expanding plate ranges) and reload the dictionary."""
    result = apply(store, settings, current(settings, codec).values())
    reload_dictionary(store, settings)
    return result


_UTC_US = pa.timestamp("us", tz="UTC")
_HOLDS_SCHEMA = pa.schema([
    ("hold_id", pa.string()), ("case_number", pa.string()), ("reason", pa.string()), ("agency", pa.string()),
    ("plate", pa.string()), ("range_from", _UTC_US), ("range_to", _UTC_US), ("placed_by", pa.string()),
    ("placed_at", _UTC_US), ("status", pa.string()), ("released_by", pa.string()), ("released_at", _UTC_US),
    ("release_reason", pa.string()), ("version", _UTC_US),
])


def _holds_table(holds: list[EvidenceHold]) -> pa.Table:
    return pa.Table.from_pylist([{**h.model_dump(exclude={"read_ids", "status"}), "status": h.status.value,
                                  "version": _version(h)} for h in holds], schema=_HOLDS_SCHEMA)
