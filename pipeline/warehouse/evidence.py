"""Evidence packages: the reads a case holds, on portable media, verifiable later.

`export` writes into an empty directory:
  reads.jsonl       one JSON object per held read (no image bytes; `image` names the file)
  images/NNNNNN.jpg the crop of each read that has one
  manifest.json     case, agency, the holds (who placed each, when, why), who
                    exported it and when, and every file with its SHA-256 and size
  manifest.sha256   the SHA-256 of manifest.json, in `sha256sum` format, so
                    `sha256sum -c manifest.sha256` works without this program
The package is built in memory, the EVIDENCE_EXPORT audit event (with the manifest
hash) is written, and only then are files written. `verify` checks the manifest's
hash, every listed file, and that nothing unlisted was added; the first bad file is
named.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from alpr.warehouse import holds
from alpr.audit.trail import AuditLog
from alpr.core.errors import AlprError
from alpr.core.logs import get_log
from alpr.core.settings import Settings
from alpr.core.sql import lit
from alpr.core.store import Store
from alpr.schemas import Codec

log = get_log(__name__)
EXPORT = "EVIDENCE_EXPORT"
FORMAT = "alpr-evidence/1"
MANIFEST, MANIFEST_HASH = "manifest.json", "manifest.sha256"
_COLUMNS = ("read_id, frame_id, camera_id, agency, plate, plate_state, confidence, "
            "captured_at, read_at, lat, lon, heading_deg, model_version, frames_seen")


class EvidenceInvalid(AlprError):
    """A package does not match its manifest; the message names the first bad file."""

    exit_code = 5


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Package:
    files: dict[str, bytes]      # relative path -> content, manifest included
    manifest_sha256: str
    rows: int
    images: int


def build(store: Store, settings: Settings, case: str, user: str, now: datetime | None = None) -> Package:
    """Everything the package will hold, in memory (the held reads of one case)."""
    db = settings.clickhouse_database
    held_by = store.rows(
        f"SELECT hold_id, reason, agency, plate, range_from, range_to, placed_by, placed_at FROM {db}.holds FINAL "
        f"WHERE case_number = {lit(case)} AND status = 'ACTIVE' ORDER BY placed_at, hold_id")
    if not held_by:
        raise AlprError(f"no active hold for case {case}: only held reads are exported as evidence")
    rows = store.rows(
        f"SELECT {_COLUMNS}, base64Encode(crop_jpeg) AS crop_b64 FROM {db}.reads FINAL "
        f"WHERE read_id IN (SELECT read_id FROM {db}.held_reads WHERE case_number = {lit(case)}) "
        "ORDER BY captured_at, read_id")
    files: dict[str, bytes] = {}
    lines = []
    for n, row in enumerate(rows, 1):
        crop = base64.b64decode(row.pop("crop_b64"))
        row["captured_at"] = _iso(row["captured_at"])
        row["read_at"] = _iso(row["read_at"])
        row["image"] = None
        if crop:
            name = f"images/{n:06d}.jpg"
            files[name] = crop
            row["image"], row["image_sha256"] = name, sha256(crop)
        lines.append(json.dumps(row, sort_keys=True, ensure_ascii=False))
    files["reads.jsonl"] = ("\n".join(lines) + "\n").encode() if lines else b""
    manifest = {
        "format": FORMAT, "case_number": case, "agency": settings.agency, "holds": held_by,
        "exported_by": user, "exported_at": (now or datetime.now(timezone.utc)).isoformat(),
        "rows": len(rows), "images_note": "crop images as stored; reads.jsonl carries no image bytes",
        "files": [{"path": p, "sha256": sha256(b), "bytes": len(b)} for p, b in sorted(files.items())],
    }
    body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    digest = sha256(body)
    files[MANIFEST] = body
    files[MANIFEST_HASH] = f"{digest}  {MANIFEST}\n".encode()
    return Package(files, digest, len(rows), sum(1 for p in files if p.startswith("images/")))


def _iso(text: str) -> str:
    """ClickHouse 'YYYY-MM-DD hh:mm:ss.ffffff' (UTC) as ISO 8601 with Z."""
    return text.replace(" ", "T") + "Z"


def export(store: Store, settings: Settings, codec: Codec, audit: AuditLog, *, case: str, out: Path,
           user: str) -> dict:
    """Write the package for `case` into `out` (which must be new or empty); audited first."""
    case, user = case.strip(), user.strip()
    if not case or not user:
        raise AlprError("--case and --user are required and must not be empty")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AlprError(f"{out} exists and is not an empty directory; an evidence package is never overwritten")
    holds.sync(store, settings, codec)  # holds placed while the warehouse was down are applied first
    package = build(store, settings, case, user)
    audit.record(actor=user, agency=settings.agency, action=EXPORT, outcome="ALLOWED", case_number=case,
                 purpose="evidence export of held reads", subject=str(out.resolve()), rows=package.rows,
                 details={"manifest_sha256": package.manifest_sha256, "images": str(package.images)})
    out.mkdir(parents=True, exist_ok=True)
    for rel, data in package.files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # portable media get unplugged: the bytes must be on them
    log.info("evidence.exported", rows=package.rows, images=package.images)
    return {"case": case, "out": str(out), "rows": package.rows, "images": package.images,
            "manifest_sha256": package.manifest_sha256}


def verify(folder: Path) -> dict:
    """Check a package; raises EvidenceInvalid naming the first bad file."""
    folder = Path(folder)
    try:
        recorded = (folder / MANIFEST_HASH).read_text().split()[0]
        body = (folder / MANIFEST).read_bytes()
    except (FileNotFoundError, IndexError, NotADirectoryError):
        raise EvidenceInvalid(f"{folder}: not an evidence package ({MANIFEST} or {MANIFEST_HASH} missing)") from None
    if sha256(body) != recorded:
        raise EvidenceInvalid(f"{folder / MANIFEST}: SHA-256 does not match {MANIFEST_HASH} (manifest altered)")
    try:
        manifest = json.loads(body)
        entries = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise EvidenceInvalid(f"{folder / MANIFEST}: not a manifest") from None
    listed = {MANIFEST, MANIFEST_HASH}
    for entry in entries:
        rel = PurePosixPath(entry["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise EvidenceInvalid(f"{folder / MANIFEST}: file path {entry['path']!r} leaves the package")
        path = folder / rel
        listed.add(str(rel))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise EvidenceInvalid(f"{path}: missing") from None
        if sha256(data) != entry["sha256"] or len(data) != entry["bytes"]:
            raise EvidenceInvalid(f"{path}: SHA-256 does not match the manifest (file altered)")
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.relative_to(folder).as_posix() not in listed:
            raise EvidenceInvalid(f"{path}: not in the manifest (file added)")
    return {"ok": True, "case": manifest.get("case_number"), "files": len(entries),
            "rows": manifest.get("rows"), "manifest_sha256": recorded}
