"""Releasing ALPR data to another agency: written request, supervisor review, scoped export.

Consumes and produces `alpr.releases` (every version of every request kept, never
compacted or expired): a request is PENDING, or ROUTED_TO_RECORDS when the
requesting agency is neither law enforcement nor prosecutorial (those go through
the public-records process and can never be exported here); a supervisor who is
not the submitter approves or denies it with a reason; an APPROVED request is
exported once, only within its plates x time range, as a BagIt package (the same
format as evidence packages, alpr.warehouse.evidence; `alpr evidence verify` checks
both), and becomes EXPORTED. Every step, allowed or refused, is on the audit
topic before it takes effect.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from alpr.core import kafka
from alpr.audit.trail import AuditLog, publish_audited
from alpr.core.errors import AlprError, Refused
from alpr.core.logs import get_log
from alpr.core.settings import Settings
from alpr.core.store import Store
from alpr.core.topics import RELEASES
from alpr.schemas import Codec, ReleaseRequest, UndecodableRecord, normalize_plate
from alpr.schemas.models import AgencyType, ReleaseStatus, User, UserRole

log = get_log(__name__)
SUBMITTER_ROLES = {UserRole.ANALYST, UserRole.SUPERVISOR}
EXPORTER_ROLES = {UserRole.ANALYST, UserRole.SUPERVISOR}
EXPORT_COLUMNS = ("read_id", "camera_id", "agency", "plate", "plate_state", "confidence", "captured_at", "lat", "lon",
                  "heading_deg", "model_version", "base64Encode(crop_jpeg) AS crop_jpeg_base64")  # JPEG bytes as text


def load_requests(settings: Settings, codec: Codec) -> dict[str, ReleaseRequest]:
    """The newest version of every request on the topic. A version that does not decode stops the
    load: a damaged record must not let an older (say, APPROVED) version stand in for it."""
    out: dict[str, ReleaseRequest] = {}
    for msg in kafka.read_to_end(settings, RELEASES):
        try:
            req = codec.decode(msg.value(), ReleaseRequest)
        except UndecodableRecord as exc:
            raise AlprError(f"{RELEASES} offset {msg.offset()} does not decode ({exc.reason}); "
                            "releases are blocked until it is examined") from None
        out[req.request_id] = req
    return out


def _publish(settings: Settings, codec: Codec, audit: AuditLog, req: ReleaseRequest, **event) -> None:
    """Every version of a request reaches the topic through the audited-change step."""
    publish_audited(audit, kafka.Publisher(settings, codec, "releases"), [(RELEASES, req.request_id, req)], **event)


def _refuse(audit: AuditLog, user: User, action: str, req_id: str, reason: str, case: str | None = None) -> None:
    audit.record(actor=user.name, agency=user.agency, action=action, outcome="REFUSED", subject=req_id,
                 case_number=case, reason=reason)
    raise Refused(reason)


def submit(settings: Settings, codec: Codec, audit: AuditLog, user: User, *, requesting_agency: str,
           agency_type: AgencyType, requester: str, purpose: str, case_number: str, plates: list[str],
           scope_from: datetime, scope_to: datetime, document_ref: str) -> ReleaseRequest:
    """Record a written request; agencies that are not LE/prosecutorial are routed to records release."""
    request_id = f"rq-{uuid.uuid4().hex[:12]}"
    if user.role not in SUBMITTER_ROLES:
        _refuse(audit, user, "RELEASE_REQUEST", request_id, f"role {user.role.value.lower()} may not file requests")
    plates = sorted({normalize_plate(p) for p in plates if normalize_plate(p)})
    if not plates:
        raise Refused("a request names at least one plate")
    if scope_from >= scope_to:
        raise Refused("the scope's start must be before its end")
    for field, value in (("requesting agency", requesting_agency), ("requester", requester), ("purpose", purpose),
                         ("case number", case_number), ("written request reference", document_ref)):
        if not value.strip():
            raise Refused(f"the {field} is required")
    status = ReleaseStatus.PENDING if agency_type in (AgencyType.LAW_ENFORCEMENT, AgencyType.PROSECUTORIAL) \
        else ReleaseStatus.ROUTED_TO_RECORDS
    req = ReleaseRequest(request_id=request_id, requesting_agency=requesting_agency.strip(), agency_type=agency_type,
                         requester=requester.strip(), purpose=purpose.strip(), case_number=case_number.strip(),
                         plates=plates, scope_from=scope_from, scope_to=scope_to, document_ref=document_ref.strip(),
                         submitted_by=user.name, submitted_at=datetime.now(timezone.utc), status=status)
    _publish(settings, codec, audit, req, actor=user.name, agency=user.agency, action="RELEASE_REQUEST",
             subject=request_id, case_number=req.case_number, purpose=req.purpose,
             details={"requesting_agency": req.requesting_agency, "agency_type": agency_type.value,
                      "requester": req.requester, "document_ref": req.document_ref, "status": status.value,
                      "plates": ",".join(plates), "scope_from": scope_from.isoformat(),
                      "scope_to": scope_to.isoformat()})
    log.info("release.requested", request_id=request_id, status=status.value)
    return req


def review(settings: Settings, codec: Codec, audit: AuditLog, user: User, request_id: str, approve: bool,
           reason: str) -> ReleaseRequest:
    """Approve or deny: only a supervisor, never the submitter, only a PENDING request, always with a reason."""
    action = "RELEASE_APPROVE" if approve else "RELEASE_DENY"
    req = load_requests(settings, codec).get(request_id)
    if req is None:
        _refuse(audit, user, action, request_id, f"no release request {request_id}")
    if user.role != UserRole.SUPERVISOR:
        _refuse(audit, user, action, request_id, "only a supervisor (the designated approver) reviews releases",
                req.case_number)
    if user.name == req.submitted_by:
        _refuse(audit, user, action, request_id, "the submitter of a request may not review it", req.case_number)
    if req.status != ReleaseStatus.PENDING:
        _refuse(audit, user, action, request_id, f"request {request_id} is {req.status.value}, not PENDING",
                req.case_number)
    if len(reason.strip()) < 5:
        _refuse(audit, user, action, request_id, "a review needs a reason", req.case_number)
    now = datetime.now(timezone.utc)
    new = req.model_copy(update={"status": ReleaseStatus.APPROVED if approve else ReleaseStatus.DENIED,
                                 "reviewed_by": user.name, "reviewed_at": now, "review_reason": reason.strip()})
    _publish(settings, codec, audit, new, actor=user.name, agency=user.agency, action=action, subject=request_id,
             case_number=req.case_number, purpose=req.purpose, reason=reason.strip(),
             details={"requesting_agency": req.requesting_agency, "submitted_by": req.submitted_by})
    return new


@dataclass(frozen=True)
class ExportResult:
    request: ReleaseRequest
    folder: Path
    rows: int
    manifest_sha256: str  # SHA-256 of the bag's tag manifest (the package fingerprint)


def _scope_sql(req: ReleaseRequest, database: str) -> str:
    plates = ", ".join(f"'{p}'" for p in req.plates)  # plates are validated [A-Z0-9]{1,10} by the model
    ts = lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f")  # noqa: E731
    cols = ", ".join(EXPORT_COLUMNS)
    return (f"SELECT {cols} FROM {database}.reads FINAL WHERE plate IN ({plates}) "
            f"AND captured_at >= toDateTime64('{ts(req.scope_from)}', 6, 'UTC') "
            f"AND captured_at <= toDateTime64('{ts(req.scope_to)}', 6, 'UTC') ORDER BY captured_at, read_id")


def export(settings: Settings, codec: Codec, audit: AuditLog, user: User, store: Store, request_id: str,
           out_dir: Path | None = None) -> ExportResult:
    """Write the package of an APPROVED request as a BagIt bag: data/reads.jsonl, data/request.json."""
    req = load_requests(settings, codec).get(request_id)
    if req is None:
        _refuse(audit, user, "RELEASE_EXPORT", request_id, f"no release request {request_id}")
    if user.role not in EXPORTER_ROLES:
        _refuse(audit, user, "RELEASE_EXPORT", request_id, f"role {user.role.value.lower()} may not export",
                req.case_number)
    if req.agency_type not in (AgencyType.LAW_ENFORCEMENT, AgencyType.PROSECUTORIAL):
        _refuse(audit, user, "RELEASE_EXPORT", request_id, "requests from agencies that are not law enforcement or "
                "prosecutorial go through the records-release process and are never exported here", req.case_number)
    if req.status != ReleaseStatus.APPROVED or not req.reviewed_by or req.reviewed_by == req.submitted_by:
        _refuse(audit, user, "RELEASE_EXPORT", request_id,
                f"request {request_id} is {req.status.value}; only a request approved by a supervisor is exported",
                req.case_number)
    rows = store.rows(_scope_sql(req, settings.clickhouse_database))
    plates = set(req.plates)
    for r in rows:  # the query is the scope; this checks it once more before anything is written
        at = datetime.fromisoformat(r["captured_at"]).replace(tzinfo=timezone.utc)
        if r["plate"] not in plates or not (req.scope_from <= at <= req.scope_to):
            raise AlprError(f"export of {request_id} stopped: a row outside the approved scope came back")
    folder = Path(out_dir or settings.release_export_dir or settings.data_dir / "releases") / request_id
    audit.record(actor=user.name, agency=user.agency, action="RELEASE_EXPORT", outcome="ALLOWED", subject=request_id,
                 case_number=req.case_number, purpose=req.purpose, rows=len(rows),
                 details={"requesting_agency": req.requesting_agency, "folder": str(folder),
                          "reviewed_by": req.reviewed_by or ""})
    try:
        manifest_sha = _write_package(folder, req, rows, user)
    except Exception as exc:  # audited, then raised: the package was not written
        audit.record(actor=user.name, agency=user.agency, action="RELEASE_EXPORT", outcome="FAILED",
                     subject=request_id, case_number=req.case_number, reason=str(exc)[:500])
        raise
    done = req.model_copy(update={"status": ReleaseStatus.EXPORTED, "exported_at": datetime.now(timezone.utc),
                                  "export_sha256": manifest_sha})
    _publish(settings, codec, audit, done, outcome="DONE", actor=user.name, agency=user.agency,
             action="RELEASE_EXPORT", subject=request_id, case_number=req.case_number, rows=len(rows),
             details={"tagmanifest_sha256": manifest_sha, "empty": str(not rows).lower()})
    log.info("release.exported", request_id=request_id, rows=len(rows))
    return ExportResult(done, folder, len(rows), manifest_sha)


def _write_package(folder: Path, req: ReleaseRequest, rows: list[dict], user: User) -> str:
    """The release as a BagIt bag; returns its fingerprint (SHA-256 of the tag manifest)."""
    from alpr.warehouse import evidence

    if folder.exists():
        raise AlprError(f"{folder} exists; an export is never overwritten")
    files = {"request.json": json.dumps(req.model_dump(mode="json"), indent=2, sort_keys=True).encode(),
             "reads.jsonl": b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows)}
    info = {"Source-Organization": req.requesting_agency, "External-Identifier": req.request_id,
            "External-Description": f"ALPR release to {req.requesting_agency}, case {req.case_number}",
            "ALPR-Package": "release", "ALPR-Request-Id": req.request_id, "ALPR-Case-Number": req.case_number,
            "ALPR-Approved-By": req.reviewed_by or "", "ALPR-Exported-By": user.name,
            "ALPR-Exported-At": datetime.now(timezone.utc).isoformat(), "ALPR-Rows": str(len(rows))}
    staging, digest = evidence.stage(folder, files, info)
    evidence.place(staging, folder)
    return digest


def describe(req: ReleaseRequest) -> dict:
    return req.model_dump(mode="json")
