"""One valid instance of every record type, for tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from alpr.schemas.models import (
    Alert, AuditEvent, DeadLetter, EvidenceHold, Frame, GeoPosition, HotlistEntry, PartialPlate,
    PlateRead, ReleaseRequest,
)
from alpr.schemas.models import LoginLockout, User

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=timezone.utc)
POS = GeoPosition(lat=38.5816, lon=-121.4944, heading_deg=270.0)


def frame(i: int = 0) -> Frame:
    return Frame(frame_id=f"f{i}", camera_id="cam-1", agency="SPD", seq=i, captured_at=NOW, position=POS,
                 width=640, height=480, jpeg=b"\xff\xd8jpeg\xff\xd9")


def read(i: int = 0, plate: str = "7ABC123") -> PlateRead:
    return PlateRead(read_id=f"r{i}", frame_id=f"f{i}", camera_id="cam-1", agency="SPD", plate=plate,
                     plate_state="CA", confidence=0.97, char_confidences=[0.99] * len(plate), box=[10, 20, 110, 50],
                     crop_jpeg=b"\xff\xd8crop", captured_at=NOW, read_at=NOW, position=POS,
                     model_version="test-1")


def hotlist(plate: str = "7ABC123") -> HotlistEntry:
    return HotlistEntry(plate=plate, state="CA", reason="STOLEN_VEHICLE", source="STATE", case_number="24-001",
                        agency="SPD", entered_by="dispatch1", entered_at=NOW, expires_at=NOW + timedelta(days=30))


def partial() -> PartialPlate:
    return PartialPlate(pattern_id="p1", pattern="7AB?12*", case_number="24-002", incident_type="HOMICIDE",
                        agency="SPD", entered_by="det1", entered_at=NOW, expires_at=NOW + timedelta(days=30))


def alert() -> Alert:
    return Alert(alert_id="a1", kind="EXACT", agency="SPD", read=read(), hotlist_entry=hotlist(),
                 verify_before_action="Verify through CLETS before acting.", notices=["tribal land"], raised_at=NOW)


def audit() -> AuditEvent:
    return AuditEvent(event_id="e1", chain="test", seq=0, occurred_at=NOW, actor="analyst1", agency="SPD", action="QUERY",
                      outcome="ALLOWED", case_number="24-001", purpose="stolen vehicle", subject="SELECT 1",
                      rows=1, details={"ip": "127.0.0.1"}, prev_hash="0" * 64, hash="a" * 64)


def release() -> ReleaseRequest:
    return ReleaseRequest(request_id="rq1", requesting_agency="SDPD", agency_type="LAW_ENFORCEMENT",
                          requester="Det. Smith", purpose="robbery investigation", case_number="24-003",
                          plates=["7ABC123"], scope_from=NOW - timedelta(days=7), scope_to=NOW,
                          document_ref="DOC-1", submitted_by="records1", submitted_at=NOW, status="PENDING")


def hold() -> EvidenceHold:
    return EvidenceHold(hold_id="h1", case_number="24-001", reason="evidence in robbery", agency="SPD",
                        read_ids=["r1", "r2"], placed_by="sgt1", placed_at=NOW, status="ACTIVE")


def dead_letter() -> DeadLetter:
    return DeadLetter(source_topic="alpr.frames", source_partition=0, source_offset=5, consumer="g",
                      reason="bad", error_class="UndecodableRecord", key=b"k", value=b"v", failed_at=NOW)


def user() -> User:
    return User(name="analyst1", role="ANALYST", agency="SPD", password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
                trained_at=NOW - timedelta(days=30), changed_by="admin1", changed_at=NOW)


def lockout() -> LoginLockout:
    return LoginLockout(name="analyst1", agency="SPD", failures=2, last_failure_at=NOW, changed_by="proxy@host",
                        changed_at=NOW)


ALL = [frame(), read(), hotlist(), partial(), alert(), audit(), release(), hold(), dead_letter(), user(), lockout()]
