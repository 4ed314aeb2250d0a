"""Hotlists: plates to alert on, kept on the compacted topic `alpr.hotlist`.

Keys are `STATE:PLATE` (HotlistEntry.key); a null value (tombstone) removes an entry.
Extracts from the state and federal systems arrive as CSV files; `import_csv`
publishes only the difference from what the topic already holds (new and changed
entries, tombstones for entries of that source missing from the file), after
writing one audit event that counts them. A file with any malformed row changes
nothing unless the caller asks to skip bad rows. Every entry carries the agency of
the user who entered or imported it.

Removing an entry of a state or federal extract by hand is remembered on the
compacted topic `alpr.hotlist_removals`, so the next import of that extract does not
silently put it back: a row that repeats the removed entry stays off the list, and a
row that changed (new case, reason or expiry) goes back on, named in the import's
`overrides_local_removals`.

`HotlistIndex` is the in-memory view the alert topology looks plates up in,
including the OCR-confusion neighbours of a read (0/O, 1/I, 8/B, ...).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from alpr.core import kafka
from alpr.audit.trail import AuditLog, publish_audited
from alpr.core.logs import get_log
from alpr.alerting.partials import BadInput
from alpr.core.settings import Settings
from alpr.core.topics import HOTLIST
from alpr.core.times import parse_when
from alpr.schemas import Codec, HotlistEntry, UndecodableRecord
from alpr.schemas.models import PLATE_RE, HotlistReason, HotlistSource, normalize_plate

log = get_log(__name__)

COLUMNS = ("plate", "state", "reason", "source", "case_number", "expires")
OPTIONAL_COLUMNS = ("notes",)
STATE_RE = re.compile(r"^[A-Z]{2,3}\Z")
RAW_PLATE_RE = re.compile(r"^[A-Za-z0-9 -]+\Z")  # spaces and dashes are dropped; anything else is an error
# Characters a plate reader mistakes for one another; one substitution makes a POSSIBLE match.
CONFUSABLE_GROUPS = ("0OQD", "1I", "8B", "5S", "2Z", "6G")
CONFUSABLE: dict[str, str] = {c: g.replace(c, "") for g in CONFUSABLE_GROUPS for c in g}
# Fields that make two entries for the same key "the same" (who, of which agency, and when entered does not).
_COMPARED = ("plate", "state", "reason", "source", "case_number", "expires_at", "notes")
# What an extract row must repeat for a local removal of it to stand (notes may differ).
_REMOVAL_COMPARED = ("plate", "state", "reason", "source", "case_number", "expires_at")
# Compacted topic of local removals of extract entries, keyed like the hotlist; the value is the
# removed entry with `entered_by`/`entered_at` naming who removed it and when, `notes` why.
REMOVALS = "alpr.hotlist_removals"
EXTRACT_SOURCES = ("STATE", "FEDERAL")


def current(settings: Settings, codec: Codec, topic: str = HOTLIST) -> dict[str, HotlistEntry]:
    """The hotlist (or its removals) as the topic holds it now: key -> entry, tombstoned keys absent."""
    return kafka.current_records(settings, codec, topic, HotlistEntry)


# --- the in-memory index the topology uses

def confusion_neighbours(plate: str) -> Iterator[tuple[str, str]]:
    """(neighbour plate, 'X/Y') for every plate one confusable substitution away."""
    for i, ch in enumerate(plate):
        for alt in CONFUSABLE.get(ch, ""):
            yield plate[:i] + alt + plate[i + 1:], f"{ch}/{alt}"


def same_plate(plate: str) -> str:
    """The form plates are matched in: the letter O and the digit 0 are one character.

    US plate fonts draw them alike, issuing authorities do not issue two plates that differ
    only there, and the US reader writes both as 0; so a hotlist entry typed with an O must
    still be an EXACT match for the read."""
    return plate.replace("O", "0")


class HotlistIndex:
    """Entries by key and by plate (O and 0 matched as one, `same_plate`); updated from the topic, read on every plate read.

    `put_raw` files an entry's Avro bytes under the plate its key names and decodes them
    only when a read looks that plate up: a worker starts with 100,000 entries in well
    under a second, and decodes the few that ever match. An entry that does not decode,
    or whose key does not name its own plate, is dropped (and logged) at that moment.
    """

    def __init__(self, codec: Codec | None = None) -> None:
        self._codec = codec
        self._by_key: dict[str, str] = {}  # key -> plate it is filed under
        self._by_plate: dict[str, dict[str, HotlistEntry | bytes]] = {}
        self.undecodable = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def put(self, key: str, entry: HotlistEntry | None) -> None:
        self._file(key, None if entry is None else entry.plate, entry)

    def put_raw(self, key: str, value: bytes | None) -> None:
        """One message of the hotlist topic, not decoded yet (None: a tombstone)."""
        plate = key.partition(":")[2] if value is not None else None
        self._file(key, plate or None, value)

    def _file(self, key: str, plate: str | None, value: HotlistEntry | bytes | None) -> None:
        old = self._by_key.pop(key, None)
        if old is not None:
            same = self._by_plate.get(old, {})
            same.pop(key, None)
            if not same:
                self._by_plate.pop(old, None)
        if value is None or plate is None:
            if value is not None:
                self.undecodable += 1
                log.error("hotlist.bad_key", reason="key does not name STATE:PLATE")
            return
        plate = same_plate(plate)
        self._by_key[key] = plate
        self._by_plate.setdefault(plate, {})[key] = value

    def get(self, key: str) -> HotlistEntry | None:
        plate = self._by_key.get(key)
        return None if plate is None else self._entries(plate).get(key)

    def _entries(self, plate: str) -> dict[str, HotlistEntry]:
        found = self._by_plate.get(plate)
        if not found:
            return {}
        for key, value in list(found.items()):
            if isinstance(value, bytes):
                try:
                    entry = self._codec.decode(value, HotlistEntry)
                    if entry.key != key:
                        raise UndecodableRecord(f"entry is for {entry.state}:<plate>, not its key")
                except UndecodableRecord as exc:
                    self.undecodable += 1
                    log.error("hotlist.undecodable", reason=exc.reason[:200])
                    self._file(key, None, None)
                    continue
                found[key] = entry
        return self._by_plate.get(plate, {})

    def lookup(self, plate: str, now: datetime) -> list[HotlistEntry]:
        """Unexpired entries for exactly this plate (any state)."""
        return [e for e in self._entries(same_plate(plate)).values() if not expired(e, now)]

    def possible(self, plate: str, now: datetime) -> list[tuple[HotlistEntry, str]]:
        """Unexpired entries one OCR confusion away from the plate, with the confusion."""
        out, own = [], same_plate(plate)
        for neighbour, swap in confusion_neighbours(plate):
            if same_plate(neighbour) != own and same_plate(neighbour) in self._by_plate:
                for e in self.lookup(neighbour, now):
                    out.append((e, swap))
        return out


def expired(entry: HotlistEntry, now: datetime) -> bool:
    return entry.expires_at is not None and entry.expires_at <= now


# --- CSV import

@dataclass
class ImportResult:
    source: str
    rows: int = 0
    added: list[HotlistEntry] = field(default_factory=list)
    changed: list[HotlistEntry] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)
    kept_removed: list[str] = field(default_factory=list)   # rows a local removal keeps off the list
    overridden: list[str] = field(default_factory=list)     # local removals this extract undoes (row changed)
    forgotten: list[str] = field(default_factory=list)      # local removals the extract now agrees with

    def summary(self) -> dict:
        return {"source": self.source, "rows": self.rows, "added": len(self.added), "changed": len(self.changed),
                "removed": len(self.removed), "unchanged": self.unchanged,
                "kept_removed": self.kept_removed, "overrides_local_removals": self.overridden,
                "bad_rows": [{"line": n, "error": e} for n, e in self.bad]}


def parse_expiry(text: str) -> datetime | None:
    """Empty: never. A date: through the end of that day (UTC). A date-time must carry its zone."""
    return parse_when(text, "expires", date_means="end") if text.strip() else None


def make_entry(*, plate: str, state: str, reason: str, source: str, case_number: str, expires: str | datetime | None,
               agency: str, user: str, notes: str | None = None, now: datetime | None = None) -> HotlistEntry:
    """A validated entry from what a person or a file gave; ValueError names the bad field."""
    p = normalize_plate(plate)
    if not RAW_PLATE_RE.match(plate.strip()) or not PLATE_RE.match(p):
        raise ValueError(f"plate {plate!r} is not 1-10 letters or digits")
    st = state.strip().upper()
    if not STATE_RE.match(st):
        raise ValueError(f"state {state!r} is not a 2-3 letter code")
    r = reason.strip().upper()
    if r not in HotlistReason.__members__:
        raise ValueError(f"reason {reason!r} is not one of {', '.join(HotlistReason.__members__)}")
    src = source.strip().upper()
    if src not in HotlistSource.__members__:
        raise ValueError(f"source {source!r} is not one of {', '.join(HotlistSource.__members__)}")
    if not case_number.strip():
        raise ValueError("case_number is empty")
    exp = expires if isinstance(expires, datetime) or expires is None else parse_expiry(expires)
    return HotlistEntry(plate=p, state=st, reason=r, source=src, case_number=case_number.strip(), agency=agency,
                        entered_by=user, entered_at=now or datetime.now(timezone.utc), expires_at=exp,
                        notes=(notes or "").strip() or None)


def _same(a: HotlistEntry, b: HotlistEntry) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in _COMPARED)


def diff_csv(path: Path, source: str, current_list: dict[str, HotlistEntry], *, agency: str,
             user: str, removals: dict[str, HotlistEntry] | None = None) -> ImportResult:
    """Compare a CSV extract with the current list; bad rows are collected, not raised.

    `removals`: local removals of extract entries. A row that repeats a removed entry stays
    off the list (`kept_removed`); a row that differs from it (a new case, reason or expiry)
    is new information and is added, and the import names the removal it overrides."""
    source = source.upper()
    result = ImportResult(source=source)
    now = datetime.now(timezone.utc)
    wanted: dict[str, HotlistEntry] = {}
    seen_at: dict[str, int] = {}
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        reader = csv.DictReader(fh)
        try:
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
        except UnicodeDecodeError as exc:
            raise BadInput(f"{path}: not UTF-8 text ({exc.reason}); export the extract as "
                           "UTF-8 CSV; nothing imported") from None
        missing = [c for c in COLUMNS if c not in header]
        unknown = [h for h in header if h not in COLUMNS + OPTIONAL_COLUMNS]
        if missing or unknown:
            raise BadInput(f"{path}: line 1: header must name {', '.join(COLUMNS)}"
                           + (f"; missing {', '.join(missing)}" if missing else "")
                           + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        reader.fieldnames = header
        try:
            for row in reader:
                line = reader.line_num
                result.rows += 1
                try:
                    if None in row or any(row.get(c) is None for c in COLUMNS):
                        raise ValueError(f"expected {len(header)} fields")
                    if row["source"].strip().upper() != source:
                        raise ValueError(f"source {row['source']!r} but this import is --source {source}")
                    entry = make_entry(plate=row["plate"], state=row["state"], reason=row["reason"],
                                       source=row["source"], case_number=row["case_number"],
                                       expires=row["expires"], agency=agency, user=user,
                                       notes=row.get("notes"), now=now)
                    if entry.key in seen_at:
                        raise ValueError(f"{entry.key} already on line {seen_at[entry.key]}")
                except ValueError as exc:  # pydantic's ValidationError is a ValueError too
                    result.bad.append((line, str(exc).splitlines()[0]))
                    continue
                seen_at[entry.key] = line
                wanted[entry.key] = entry
        except csv.Error as exc:
            raise BadInput(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None
        except UnicodeDecodeError as exc:  # a Latin-1 export, or not text at all (a JPEG)
            raise BadInput(f"{path}: not UTF-8 text ({exc.reason}); export the extract as "
                           "UTF-8 CSV; nothing imported") from None
    removals = {k: e for k, e in (removals or {}).items() if e.source.value == source}
    for key, entry in wanted.items():
        old = current_list.get(key)
        gone = removals.get(key) if old is None else None
        if gone is not None and all(getattr(gone, f) == getattr(entry, f) for f in _REMOVAL_COMPARED):
            result.kept_removed.append(key)
        elif old is None:
            if gone is not None:
                result.overridden.append(key)
            result.added.append(entry)
        elif not _same(old, entry):
            result.changed.append(entry)
        else:
            result.unchanged += 1
    result.removed = sorted(k for k, e in current_list.items() if e.source.value == source and k not in wanted)
    result.forgotten = sorted(k for k in removals if k not in wanted)
    return result


def _bad_rows_message(path: Path, bad: list[tuple[int, str]]) -> str:
    shown = "; ".join(f"line {n}: {e}" for n, e in bad[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    return f"{path}: {len(bad)} malformed row(s), nothing imported: {shown}{more} (fix them or use --skip-bad)"


def import_csv(settings: Settings, codec: Codec, path: Path, *, source: str, user: str, skip_bad: bool = False,
               allow_empty: bool = False, audit: AuditLog | None = None, agency: str | None = None) -> ImportResult:
    """Publish the difference between a CSV extract and the topic; audit first, then publish.

    `agency`: the importing user's agency, carried by every new or changed entry (default: this
    installation's). `audit`: the caller's writer (a CLI session's), so one run is one chain segment."""
    audit = audit or AuditLog(settings, codec, "hotlist")
    agency = agency or settings.agency
    result = diff_csv(path, source, current(settings, codec), agency=agency, user=user,
                      removals=current(settings, codec, REMOVALS))
    if result.bad and not skip_bad:
        audit.record(actor=user, agency=agency, action="HOTLIST_IMPORT", outcome="REFUSED",
                     subject=str(path), reason=f"{len(result.bad)} malformed rows",
                     details={"source": result.source, "first_bad_line": str(result.bad[0][0])})
        raise BadInput(_bad_rows_message(path, result.bad))
    good = result.rows - len(result.bad)
    if good == 0 and result.removed and not allow_empty:
        raise BadInput(f"{path}: no valid rows, which would remove all {len(result.removed)} {result.source} "
                       "entries; nothing imported (use --allow-empty if that is meant)")
    changes = [(HOTLIST, e.key, e) for e in result.added + result.changed] + [(HOTLIST, k, None) for k in result.removed]
    changes += [(REMOVALS, k, None) for k in result.overridden + result.forgotten]  # nothing left to remember
    publish_audited(audit, kafka.Publisher(settings, codec, "hotlist-import"), changes, actor=user,
                    agency=agency, action="HOTLIST_IMPORT", subject=str(path), rows=len(changes),
                    details={"source": result.source, "added": str(len(result.added)),
                             "changed": str(len(result.changed)), "removed": str(len(result.removed)),
                             "unchanged": str(result.unchanged), "bad_rows": str(len(result.bad)),
                             "kept_removed": ",".join(result.kept_removed)[:1000],
                             "overrides_local_removals": ",".join(result.overridden)[:1000]})
    log.info("hotlist.imported", source=result.source, added=len(result.added), changed=len(result.changed),
             removed=len(result.removed), bad=len(result.bad), kept_removed=len(result.kept_removed),
             overrides_local_removals=len(result.overridden))
    return result


def add(settings: Settings, codec: Codec, entry: HotlistEntry, audit: AuditLog | None = None) -> str:
    """Publish one entry (new or replacing the same key); audited first. Returns 'added' or 'changed'."""
    old = current(settings, codec).get(entry.key)
    what = "added" if old is None else "changed"
    publish_audited(audit or AuditLog(settings, codec, "hotlist"), kafka.Publisher(settings, codec, "hotlist"),
                    [(HOTLIST, entry.key, entry)], actor=entry.entered_by, agency=entry.agency,
                    action="HOTLIST_ADD", case_number=entry.case_number, subject=entry.key,
                    details={"reason": entry.reason.value, "source": entry.source.value, "result": what})
    return what


@dataclass(frozen=True)
class Removed:
    entry: HotlistEntry
    remembered: bool  # an extract entry: kept off the list when its extract is imported again

    @property
    def warning(self) -> str | None:
        if not self.remembered:
            return None
        src = self.entry.source.value
        return (f"{self.entry.key} came from the {src} extract, which still lists it: the removal is remembered "
                f"and the next {src} import keeps it off the list unless the extract's entry changes "
                "(that import names every removal it overrides)")


def remove(settings: Settings, codec: Codec, *, key: str, user: str, reason: str,
           audit: AuditLog | None = None, agency: str | None = None) -> Removed:
    """Tombstone one entry; refused when the key is not on the list. Audited first.

    Removing an entry of a state or federal extract also records the removal on REMOVALS,
    so the next import of that extract does not silently put it back."""
    old = current(settings, codec).get(key)
    if old is None:
        raise BadInput(f"{key} is not on the hotlist")
    agency = agency or settings.agency
    changes: list = [(HOTLIST, key, None)]
    remembered = old.source.value in EXTRACT_SOURCES
    if remembered:
        now = datetime.now(timezone.utc)
        changes.append((REMOVALS, key, old.model_copy(update={
            "entered_by": user, "entered_at": now, "agency": agency, "notes": f"removed: {reason}"[:1000]})))
    publish_audited(audit or AuditLog(settings, codec, "hotlist"), kafka.Publisher(settings, codec, "hotlist"),
                    changes, actor=user, agency=agency, action="HOTLIST_REMOVE",
                    case_number=old.case_number, subject=key, reason=reason,
                    details={"source": old.source.value, "remembered": str(remembered)})
    return Removed(old, remembered)
