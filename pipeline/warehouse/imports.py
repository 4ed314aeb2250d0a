"""Partner feeds: a CSV or JSON Lines file of another agency's reads -> `alpr.reads`.

Columns (CSV header or JSON keys): plate, time, camera, lat, lon, and optionally
heading, state, confidence, image. The whole file is validated first; a file with
any bad row is rejected with the line numbers of its bad rows and nothing from it
is published.

Rules, each applied the same way to every row:
- time: ISO 8601 with a timezone (`Z` or `+hh:mm`); a time without one is refused
  (guessing a partner's zone would misplace reads by hours). It becomes
  `captured_at` as given (converted to UTC): the retention clock runs from it, so a
  row older than the retention period is purged at the next retention run (or at
  insert by the TTL) unless a hold covers it.
- camera: `camera_id` = camera prefix + camera (prefix defaults to `AGENCY:` so two
  agencies' camera 12 never collide).
- image: a path (relative to the feed file) or `base64:<data>`; must be a JPEG.
- confidence: as the partner states it, else 1.0 (the partner asserts the read).
- read_id: uuid5 over agency, camera, time and plate: importing the same file twice
  gives the same ids, which the warehouse stores once.
- model_version: `import:<agency>`; frame_id is null.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import ValidationError

from alpr.audit.trail import AuditLog
from alpr.core.errors import AlprError, Unavailable
from alpr.core.kafka import Publisher
from alpr.core.logs import get_log
from alpr.core.settings import Settings
from alpr.core.topics import READS
from alpr.schemas import GeoPosition, PlateRead, normalize_plate

log = get_log(__name__)
IMPORT = "READS_IMPORT"
READ_ID_NAMESPACE = uuid.UUID("5f1d3c52-8a0e-4d55-9d64-3b8f6f0c2a17")  # fixed forever: ids must not change
REQUIRED = ("plate", "time", "camera", "lat", "lon")
OPTIONAL = ("heading", "state", "confidence", "image")
MAX_IMAGE_BYTES = 512 * 1024  # alpr.reads keeps the broker's 1 MiB record limit
MAX_REPORTED = 20
FUTURE_SLACK = timedelta(minutes=5)


class ImportRejected(AlprError):
    """The feed file has bad rows; nothing from it was published."""


@dataclass(frozen=True)
class Problem:
    line: int
    message: str


def read_id_for(agency: str, camera_id: str, captured_at: datetime, plate: str) -> str:
    stamp = captured_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(uuid.uuid5(READ_ID_NAMESPACE, f"{agency}|{camera_id}|{stamp}|{plate}"))


def _rows(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line number, raw row) for every row; a header or syntax problem is one Problem."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ImportRejected(f"{path.name} line {n}: not JSON ({exc.msg}); nothing was published") from None
            if not isinstance(obj, dict):
                raise ImportRejected(f"{path.name} line {n}: not a JSON object; nothing was published")
            out.append((n, obj))
        return out
    if path.suffix.lower() != ".csv":
        raise ImportRejected(f"{path.name}: unknown format (use .csv or .jsonl)")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if missing or unknown:
        raise ImportRejected(f"{path.name} line 1: header " + (f"lacks {', '.join(missing)}" if missing else
                             f"has unknown column {unknown[0]!r}") + f" (columns: {', '.join(REQUIRED + OPTIONAL)})")
    out = []
    try:
        for row in reader:
            out.append((reader.line_num, row))
    except csv.Error as exc:
        raise ImportRejected(f"{path.name} line {reader.line_num}: not valid CSV ({exc}); "
                             "nothing was published") from None
    return out


def _image(value: str, base: Path) -> bytes:
    if value.startswith("base64:"):
        try:
            data = base64.b64decode(value[7:], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("image is not valid base64") from None
    else:
        path = (base / value) if not Path(value).is_absolute() else Path(value)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"image file {value!r} cannot be read ({exc.strerror})") from None
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("image is not a JPEG")
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"image is {len(data)} bytes, more than {MAX_IMAGE_BYTES}")
    return data


def _time(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {value!r} is not ISO 8601") from None
    if t.tzinfo is None:
        raise ValueError(f"time {value!r} has no timezone (add Z or +hh:mm)")
    return t.astimezone(timezone.utc)


def _read(raw: dict, agency: str, prefix: str, base: Path, now: datetime) -> PlateRead:
    if None in raw:  # csv.DictReader files surplus fields under None
        raise ValueError("more fields than the header has columns")
    unknown = [k for k in raw if k not in REQUIRED + OPTIONAL]
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    def text(key: str) -> str:
        v = raw.get(key)
        return "" if v is None else str(v).strip()
    for key in REQUIRED:
        if not text(key):
            raise ValueError(f"{key} is missing")
    plate = normalize_plate(text("plate"))
    captured_at = _time(text("time"))
    if captured_at > now + FUTURE_SLACK:
        raise ValueError(f"time {text('time')!r} is in the future")
    try:
        lat, lon = float(text("lat")), float(text("lon"))
        heading = float(text("heading")) if text("heading") else None
        confidence = float(text("confidence")) if text("confidence") else 1.0
    except ValueError:
        raise ValueError("lat, lon, heading and confidence must be numbers") from None
    camera_id = prefix + text("camera")
    crop = _image(text("image"), base) if text("image") else None
    return PlateRead(
        read_id=read_id_for(agency, camera_id, captured_at, plate), frame_id=None, camera_id=camera_id,
        agency=agency, plate=plate, plate_state=text("state") or None, confidence=confidence, crop_jpeg=crop,
        captured_at=captured_at, read_at=now, position=GeoPosition(lat=lat, lon=lon, heading_deg=heading),
        model_version=f"import:{agency}")


def parse(path: Path, agency: str, camera_prefix: str | None = None,
          now: datetime | None = None) -> list[PlateRead]:
    """Every row of the file as a PlateRead, or ImportRejected naming the bad lines."""
    path = Path(path)
    agency = agency.strip()
    if not agency:
        raise AlprError("--agency is required")
    prefix = f"{agency}:" if camera_prefix is None else camera_prefix
    now = now or datetime.now(timezone.utc)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AlprError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ImportRejected(f"{path.name}: not UTF-8 text; nothing was published") from None
    reads, problems = [], []
    for line, raw in _rows(path, text):
        try:
            reads.append(_read(raw, agency, prefix, path.parent, now))
        except ValidationError as exc:
            e = exc.errors()[0]
            problems.append(Problem(line, f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}"))
        except ValueError as exc:
            problems.append(Problem(line, str(exc)))
    if problems:
        first = problems[0]
        more = f"; {len(problems)} bad rows in all (lines {', '.join(str(p.line) for p in problems[:MAX_REPORTED])}" \
               f"{', ...' if len(problems) > MAX_REPORTED else ''})" if len(problems) > 1 else ""
        raise ImportRejected(f"{path.name} line {first.line}: {first.message}{more}; nothing was published")
    if not reads:
        raise ImportRejected(f"{path.name}: no rows")
    return reads


def publish(settings: Settings, audit: AuditLog, publisher: Publisher, path: Path, reads: list[PlateRead],
            user: str) -> dict:
    """Audit, then publish every read and wait for the broker to acknowledge all of them."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    unique = list({r.read_id: r for r in reads}.values())
    agency = unique[0].agency
    audit.record(actor=user, agency=settings.agency, action=IMPORT, outcome="ALLOWED", subject=str(path),
                 rows=len(unique), purpose=f"partner feed from {agency}",
                 details={"partner_agency": agency, "file_sha256": digest, "rows_in_file": str(len(reads))})
    for r in unique:
        publisher.publish(READS, r.plate, r)
    try:
        publisher.flush(60)
    except Exception as exc:
        raise Unavailable(f"not every read was acknowledged ({exc}); importing the file again is safe "
                          "(same read ids, stored once)") from None
    log.info("import.published", rows=len(unique), duplicates=len(reads) - len(unique))
    return {"file": str(path), "agency": agency, "published": len(unique), "duplicates": len(reads) - len(unique),
            "file_sha256": digest}
