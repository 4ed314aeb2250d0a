"""Partial plates from major crimes, and the matcher that checks every read against them.

Entries live on the compacted topic `alpr.partials`, keyed by pattern_id (a null
value removes one). A pattern is capitals and digits with `?` for one unknown
character and `*` for any run, e.g. `7AB?12*`; it matches the whole plate.

`PatternIndex` does not try every pattern on every read. Each pattern is filed
under one literal piece of it (up to three characters) together with where that
piece sits: at a fixed position from the start, from the end, at a fixed
position in a plate of fixed length, or floating between stars. A read looks up
its own pieces in only the placements some pattern uses, which yields a small
candidate set, and only those candidates are verified with their regular expression.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from alpr.core import kafka
from alpr.audit.trail import AuditLog, publish_audited
from alpr.core.errors import BadInput
from alpr.core.logs import get_log
from alpr.core.settings import Settings
from alpr.core.topics import PARTIALS
from alpr.schemas import Codec, PartialPlate

log = get_log(__name__)
GRAM = 3             # longest literal piece a pattern is filed under
MIN_LITERALS = 2     # a pattern naming fewer known characters would match far too many plates
_PATTERN_RE = re.compile(r"^[A-Z0-9?*]{1,16}\Z")


def normalize_pattern(text: str) -> str:
    """Capitals, no spaces or dashes, runs of `*` collapsed; raises BadInput when unusable."""
    p = re.sub(r"\*+", "*", "".join(ch for ch in text.upper() if ch not in " -"))
    if not _PATTERN_RE.match(p):
        raise BadInput(f"pattern {text!r}: use capitals, digits, ? (one character) and * (any run), "
                       "at most 16 characters")
    if sum(ch.isalnum() for ch in p) < MIN_LITERALS:
        raise BadInput(f"pattern {text!r}: name at least {MIN_LITERALS} known characters "
                       "(it would match too many plates)")
    return p


def pattern_regex(pattern: str) -> re.Pattern:
    return re.compile("".join("." if c == "?" else ".*" if c == "*" else c for c in pattern))


def _index_key(pattern: str) -> tuple:
    """The one (placement, piece) under which a pattern is filed: the most selective available."""
    parts = pattern.split("*")
    options: list[tuple[int, int, tuple]] = []  # (piece length, placement rank, key)

    def pieces(segment: str) -> Iterator[tuple[int, str]]:
        for m in re.finditer(r"[A-Z0-9]+", segment):
            run = m.group()
            for i in range(0, max(1, len(run) - GRAM + 1)):
                yield m.start() + i, run[i:i + GRAM]

    if len(parts) == 1:  # no star: fixed length, every position known
        for pos, piece in pieces(pattern):
            options.append((len(piece), 3, ("L", len(pattern), pos, piece)))
    else:
        for pos, piece in pieces(parts[0]):
            options.append((len(piece), 2, ("S", pos, piece)))
        tail = parts[-1]
        for pos, piece in pieces(tail):
            options.append((len(piece), 2, ("E", len(tail) - pos - len(piece), piece)))
        for middle in parts[1:-1]:
            for _, piece in pieces(middle):
                options.append((len(piece), 1, ("F", piece)))
    if not options:
        return ("ANY",)
    return max(options, key=lambda o: (o[0], o[1]))[2]


@dataclass(frozen=True)
class _Compiled:
    entry: PartialPlate
    regex: re.Pattern
    key: tuple


def _shape(key: tuple) -> tuple:
    """A bucket key without its piece's characters: which placements of which length exist at all."""
    if key[0] == "ANY":
        return key
    return (*key[:-1], len(key[-1]))


def _keys_for_shape(shape: tuple, plate: str) -> Iterator[tuple]:
    """The bucket keys of one shape that a plate's own pieces produce."""
    n, kind, g = len(plate), shape[0], shape[-1]
    if kind == "L":
        _, length, pos, _ = shape
        if length == n and pos + g <= n:
            yield ("L", n, pos, plate[pos:pos + g])
    elif kind == "S":
        pos = shape[1]
        if pos + g <= n:
            yield ("S", pos, plate[pos:pos + g])
    elif kind == "E":
        end = shape[1]
        i = n - end - g
        if i >= 0:
            yield ("E", end, plate[i:i + g])
    elif kind == "F":
        for i in range(0, n - g + 1):
            yield ("F", plate[i:i + g])
    else:
        yield shape


class PatternIndex:
    """All active partial patterns, matched against a plate without scanning them all.

    A read looks up only the placements some pattern is filed under (`_shapes`): about
    a dozen dictionary lookups at 10,000 patterns instead of every piece of the plate
    in every placement (74 for seven characters), which was half the worker's CPU per read."""

    def __init__(self) -> None:
        self._by_id: dict[str, _Compiled] = {}
        self._buckets: dict[tuple, set[str]] = {}
        self._shapes: dict[tuple, int] = {}  # shape -> patterns filed under it

    def __len__(self) -> int:
        return len(self._by_id)

    def put(self, pattern_id: str, entry: PartialPlate | None) -> None:
        """Add, replace or (entry None: a tombstone) remove one pattern."""
        old = self._by_id.pop(pattern_id, None)
        if old is not None:
            bucket = self._buckets[old.key]
            bucket.discard(pattern_id)
            if not bucket:
                del self._buckets[old.key]
            shape = _shape(old.key)
            self._shapes[shape] -= 1
            if not self._shapes[shape]:
                del self._shapes[shape]
        if entry is None:
            return
        compiled = _Compiled(entry, pattern_regex(entry.pattern), _index_key(entry.pattern))
        self._by_id[pattern_id] = compiled
        self._buckets.setdefault(compiled.key, set()).add(pattern_id)
        shape = _shape(compiled.key)
        self._shapes[shape] = self._shapes.get(shape, 0) + 1

    def entries(self) -> list[PartialPlate]:
        return [c.entry for c in self._by_id.values()]

    def candidates(self, plate: str) -> set[str]:
        found: set[str] = set()
        buckets = self._buckets
        for shape in self._shapes:
            for key in _keys_for_shape(shape, plate):
                bucket = buckets.get(key)
                if bucket:
                    found |= bucket
        return found

    def match(self, plate: str, now: datetime | None = None) -> list[PartialPlate]:
        """Unexpired patterns that match the whole plate."""
        now = now or datetime.now(timezone.utc)
        out = []
        for pid in self.candidates(plate):
            c = self._by_id[pid]
            if c.entry.expires_at > now and c.regex.fullmatch(plate):
                out.append(c.entry)
        return sorted(out, key=lambda e: e.pattern_id)


def compile_all(entries: Iterable[PartialPlate]) -> list[tuple[PartialPlate, re.Pattern]]:
    return [(e, pattern_regex(e.pattern)) for e in entries]


def scan_match(compiled: list[tuple[PartialPlate, re.Pattern]], plate: str) -> list[PartialPlate]:
    """One precompiled regex per pattern, all tried: the baseline the index is checked and measured against."""
    return [e for e, rx in compiled if rx.fullmatch(plate)]


# --- the topic: reading the current list, adding and removing (audited)

def current(settings: Settings, codec: Codec) -> dict[str, PartialPlate]:
    """Latest pattern per pattern_id on the topic; tombstones removed."""
    return kafka.current_records(settings, codec, PARTIALS, PartialPlate)


def add(settings: Settings, codec: Codec, *, pattern: str, case_number: str, incident_type: str, user: str,
        expires_days: int | None = None, notes: str | None = None, audit: AuditLog | None = None,
        agency: str | None = None) -> PartialPlate:
    """Publish one new pattern; the audit event is written first.

    `agency`: the entering user's (default: this installation's)."""
    if not case_number.strip():
        raise BadInput("a partial plate needs a case or event number (--case)")
    if not incident_type.strip():
        raise BadInput("a partial plate needs an incident type (--incident)")
    days = settings.partial_expiry_days if expires_days is None else expires_days
    if days < 1:
        raise BadInput("--expires-days must be at least 1")
    now = datetime.now(timezone.utc)
    agency = agency or settings.agency
    entry = PartialPlate(pattern_id=f"p-{uuid.uuid4().hex[:12]}", pattern=normalize_pattern(pattern),
                         case_number=case_number.strip(), incident_type=incident_type.strip().upper(),
                         agency=agency, entered_by=user, entered_at=now,
                         expires_at=now + timedelta(days=days), notes=notes)
    _publish(settings, codec, audit, entry.pattern_id, entry, actor=user, agency=agency,
             action="PARTIAL_ADD", case_number=entry.case_number, subject=entry.pattern_id,
             details={"pattern": entry.pattern, "incident_type": entry.incident_type,
                      "expires_at": entry.expires_at.isoformat()})
    return entry


def remove(settings: Settings, codec: Codec, *, pattern_id: str, user: str, reason: str,
           audit: AuditLog | None = None, agency: str | None = None) -> PartialPlate:
    existing = current(settings, codec).get(pattern_id)
    if existing is None:
        raise BadInput(f"no partial plate {pattern_id!r} on {PARTIALS}")
    _publish(settings, codec, audit, pattern_id, None, actor=user, agency=agency or settings.agency,
             action="PARTIAL_REMOVE",
             case_number=existing.case_number, subject=pattern_id, reason=reason,
             details={"pattern": existing.pattern})
    return existing


def _publish(settings: Settings, codec: Codec, audit: AuditLog | None, key: str, entry: PartialPlate | None,
             **event) -> None:
    publish_audited(audit or AuditLog(settings, codec, "partials"), kafka.Publisher(settings, codec, "partials"),
                    [(PARTIALS, key, entry)], **event)
