"""Evidence packages: the reads a case holds, on portable media, verifiable later.

One package format for evidence and release exports: a BagIt bag (RFC 8493), written
with the Library of Congress `bagit` package, so any BagIt tool (or `sha256sum -c
manifest-sha256.txt` in the bag) can check it without this program:
  bagit.txt, bag-info.txt   BagIt version; agency, case or request, who exported, rows
  data/reads.jsonl          one JSON object per read (an evidence export names each image file)
  data/images/NNNNNN.jpg    the crop of each read that has one (evidence exports)
  data/case.json            evidence: the holds (who placed each, when, why), read ids held but
                            not in the store; releases: data/request.json, the approved request
  manifest-sha256.txt       SHA-256 of every payload file
  tagmanifest-sha256.txt    SHA-256 of the manifest and the tag files; its own SHA-256 is the
                            package's fingerprint, written to the audit event
The bag is written into a hidden sibling folder, fingerprinted, the export is audited
(EVIDENCE_EXPORT, with the fingerprint), and only then is the folder renamed into
place. An export that finds no stored reads still writes its (empty) bag, but says
so: a warning on the command's output and `empty: true` in the audit event.
`verify` (`alpr evidence verify`, for both kinds) checks every manifest entry and that
nothing was added, naming the first bad file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import bagit

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
FORMAT = "BagIt 1.0 (RFC 8493), sha256"
TAGMANIFEST = "tagmanifest-sha256.txt"
logging.getLogger("bagit").setLevel(logging.WARNING)  # it logs every file it hashes at INFO
_COLUMNS = ("read_id, frame_id, camera_id, agency, plate, plate_state, confidence, "
            "captured_at, read_at, lat, lon, heading_deg, model_version, frames_seen")


class EvidenceInvalid(AlprError):
    """A package does not match its manifest; the message names the first bad file."""

    exit_code = 5


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Package:
    files: dict[str, bytes]      # payload: path under data/ -> content
    info: dict[str, str]         # bag-info.txt fields
    rows: int
    images: int
    missing: list[str] = field(default_factory=list)  # held read ids not in the store

    @property
    def warning(self) -> str | None:
        if self.rows == 0:
            return ("the package holds no reads: none of the held reads is in the store (purged, or never "
                    "arrived)")
        if self.missing:
            return f"{len(self.missing)} held read id(s) are not in the store (purged, or never arrived)"
        return None


def build(store: Store, settings: Settings, case: str, user: str, now: datetime | None = None) -> Package:
    """Everything the package will hold, in memory (the held reads of one case)."""
    db = settings.clickhouse_database
    held_by = store.rows(
        f"SELECT hold_id, reason, agency, plate, range_from, range_to, placed_by, placed_at FROM {db}.holds FINAL "
        f"WHERE case_number = {lit(case)} AND status = 'ACTIVE' ORDER BY placed_at, hold_id")
    if not held_by:
        raise AlprError(f"no active hold for case {case}: only held reads are exported as evidence")
    held_ids = sorted({r["read_id"] for r in store.rows(
        f"SELECT DISTINCT read_id FROM {db}.held_reads WHERE case_number = {lit(case)}")})
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
            row["image"], row["image_sha256"] = f"data/{name}", sha256(crop)
        lines.append(json.dumps(row, sort_keys=True, ensure_ascii=False))
    files["reads.jsonl"] = ("\n".join(lines) + "\n").encode() if lines else b""
    found = {r["read_id"] for r in rows}
    missing = [i for i in held_ids if i not in found]
    exported_at = (now or datetime.now(timezone.utc)).isoformat()
    files["case.json"] = json.dumps({
        "case_number": case, "agency": settings.agency, "holds": held_by, "exported_by": user,
        "exported_at": exported_at, "rows": len(rows), "held_read_ids_not_in_store": missing,
        "images_note": "crop images as stored; reads.jsonl carries no image bytes",
    }, indent=2, sort_keys=True).encode() + b"\n"
    info = {"Source-Organization": settings.agency, "External-Identifier": case,
            "External-Description": f"ALPR evidence: the held reads of case {case}",
            "ALPR-Package": "evidence", "ALPR-Case-Number": case, "ALPR-Exported-By": user,
            "ALPR-Exported-At": exported_at, "ALPR-Rows": str(len(rows))}
    return Package(files, info, len(rows), sum(1 for p in files if p.startswith("images/")), missing)


def _iso(text: str) -> str:
    """ClickHouse 'YYYY-MM-DD hh:mm:ss.ffffff' (UTC) as ISO 8601 with Z."""
    return text.replace(" ", "T") + "Z"


def check_target(out: Path) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AlprError(f"{out} exists and is not an empty directory; a package is never overwritten")
    return out


def stage(out: Path, files: dict[str, bytes], info: dict[str, str]) -> tuple[Path, str]:
    """Write a bag into a hidden sibling of `out`; returns (that folder, the bag's fingerprint)."""
    out = check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        for rel, data in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        bagit.make_bag(str(staging), dict(info), checksums=["sha256"])
        for path in staging.rglob("*"):
            if path.is_file():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())  # portable media get unplugged: the bytes must be on them
    except (OSError, bagit.BagError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise AlprError(f"could not write the package next to {out}: {exc}") from None
    return staging, sha256((staging / TAGMANIFEST).read_bytes())


def place(staging: Path, out: Path) -> None:
    """Move a staged bag into place (a rename on the same file system)."""
    os.replace(staging, out)


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def export(store: Store, settings: Settings, codec: Codec, audit: AuditLog, *, case: str, out: Path,
           user: str) -> dict:
    """Write the package for `case` into `out` (which must be new or empty); audited first."""
    case, user = case.strip(), user.strip()
    if not case or not user:
        raise AlprError("--case and --user are required and must not be empty")
    out = check_target(out)
    holds.sync(store, settings, codec)  # holds placed while the warehouse was down are applied first
    package = build(store, settings, case, user)
    staging, fingerprint = stage(out, package.files, package.info)
    details = {"tagmanifest_sha256": fingerprint, "images": str(package.images), "format": FORMAT,
               "empty": str(package.rows == 0).lower(), "held_read_ids_not_in_store": str(len(package.missing))}
    if package.warning:
        details["warning"] = package.warning
    try:
        audit.record(actor=user, agency=settings.agency, action=EXPORT, outcome="ALLOWED", case_number=case,
                     purpose="evidence export of held reads", subject=str(out.resolve()), rows=package.rows,
                     details=details)
        place(staging, out)
    except BaseException:
        discard(staging)
        raise
    log.info("evidence.exported", rows=package.rows, images=package.images, empty=package.rows == 0)
    result = {"case": case, "out": str(out), "rows": package.rows, "images": package.images,
              "tagmanifest_sha256": fingerprint, "held_read_ids_not_in_store": len(package.missing)}
    if package.warning:
        result["warning"] = package.warning
    return result


def verify(folder: Path) -> dict:
    """Check a package (evidence or release); raises EvidenceInvalid naming the first bad file."""
    folder = Path(folder)
    if not (folder / "bagit.txt").is_file() or not (folder / TAGMANIFEST).is_file():
        raise EvidenceInvalid(f"{folder}: not a package (bagit.txt or {TAGMANIFEST} missing)")
    try:
        bag = bagit.Bag(str(folder))
        listed = set(bag.entries) | {TAGMANIFEST}
        for path in sorted(folder.rglob("*")):  # bagit allows unlisted tag files; an evidence package does not
            if path.is_file() and path.relative_to(folder).as_posix() not in listed:
                raise EvidenceInvalid(f"{path}: not in the manifest (file added)")
        for rel, digests in sorted(bag.entries.items()):  # each file by name, before bagit's totals check
            path = folder / rel
            if not path.is_file():
                raise EvidenceInvalid(f"{path}: missing")
            if "sha256" in digests and sha256(path.read_bytes()) != digests["sha256"]:
                raise EvidenceInvalid(f"{path}: SHA-256 does not match the manifest (file altered)")
        bag.validate(processes=1)  # the BagIt rules themselves (bagit.txt, Payload-Oxum, manifests)
    except bagit.BagValidationError as exc:
        first = exc.details[0] if exc.details else None
        if isinstance(first, bagit.ChecksumMismatch):
            raise EvidenceInvalid(f"{folder / first.path}: SHA-256 does not match the manifest (file altered)") \
                from None
        if isinstance(first, bagit.FileMissing):
            raise EvidenceInvalid(f"{folder / first.path}: missing") from None
        if isinstance(first, bagit.UnexpectedFile):
            raise EvidenceInvalid(f"{folder / first.path}: not in the manifest (file added)") from None
        raise EvidenceInvalid(f"{folder}: {exc.message}") from None
    except bagit.BagError as exc:
        raise EvidenceInvalid(f"{folder}: not a valid package ({exc})") from None
    info = bag.info
    return {"ok": True, "format": FORMAT, "package": info.get("ALPR-Package"),
            "case": info.get("ALPR-Case-Number"), "request": info.get("ALPR-Request-Id"),
            "files": len(bag.payload_entries()), "rows": int(info.get("ALPR-Rows", 0)),
            "tagmanifest_sha256": sha256((folder / TAGMANIFEST).read_bytes())}
