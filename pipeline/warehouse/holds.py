"""Evidence holds: reads kept past retention because they are, or will likely be, evidence.

Placing or releasing a hold is audited first (HOLD_ADD / HOLD_RELEASE, actor = the
person) and then published to the compacted `alpr.holds` topic (EvidenceHold keyed
by hold_id; the newest version wins). The topic is the record of truth: the CLI
never needs the store, so it works while `alpr warehouse` owns the embedded one.

The warehouse applies holds to ClickHouse (`apply`): the `holds` table gets the
newest version, `held_reads` gets the read ids an ACTIVE hold covers, a RELEASED
hold's rows leave `held_reads`, and the `held_reads_dict` dictionary (what the
reads TTL and the retention purge consult) is reloaded.

A plate + time-range hold covers the reads of that plate in that range that are in
the store when it is applied, and it is expanded again on every retention run
(`sync`, called before each purge), so reads that arrive later in the range (a
partner import, a sink catching up) are covered before any purge can reach them.

Limits, stated plainly: the background TTL consults the dictionary as it is when a
part merges, so a read already past retention is protected only once its hold has
been applied (the warehouse applies holds within a second of publication and
reloads the dictionary; `enforce` applies all of them before it purges). Place
holds before the reads reach the end of their retention period.
"""

from __future__ import annotations

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
