"""Typed models of the Avro contracts in this folder.

The `.avsc` files are the contract on the wire; these models are how Python code
holds a record. `tests/test_schemas.py` checks that both agree field by field, so
neither drifts. Validation here is what a consumer relies on after decoding: a
record that fails it goes to the dead-letter topic, never into a stage.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

PLATE_RE = re.compile(r"^[A-Z0-9]{1,10}\Z")


def _utc(value: datetime) -> datetime:
    """Every timestamp is timezone-aware UTC; a naive one is refused, not guessed."""
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone")
    return value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]


def normalize_plate(text: str) -> str:
    """Plates are compared as capitals and digits only: 'ab-12 3' is 'AB123'."""
    return "".join(ch for ch in text.upper() if ch.isalnum() and ch.isascii())


class Record(BaseModel):
    """Base of every Avro-backed record: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    avro_name: ClassVar[str]

    def to_avro(self) -> dict:
        return self.model_dump(mode="python")


class GeoPosition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    heading_deg: float | None = Field(default=None, ge=0, lt=360)


class Frame(Record):
    avro_name: ClassVar[str] = "alpr.v1.Frame"
    frame_id: NonEmpty
    camera_id: NonEmpty
    agency: NonEmpty
    seq: int = Field(ge=0)
    captured_at: UtcDatetime
    position: GeoPosition
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    jpeg: bytes = Field(min_length=1)


def _plate(value: str) -> str:
    if not PLATE_RE.match(value):
        raise ValueError("plate must be 1-10 capitals or digits")
    return value


Plate = Annotated[str, AfterValidator(_plate)]


class PlateRead(Record):
    avro_name: ClassVar[str] = "alpr.v1.PlateRead"
    read_id: NonEmpty
    frame_id: str | None = None
    camera_id: NonEmpty
    agency: NonEmpty
    plate: Plate
    plate_state: str | None = None
    confidence: float = Field(ge=0, le=1)
    char_confidences: list[float] = Field(default_factory=list)
    box: list[int] = Field(default_factory=list)
    crop_jpeg: bytes | None = None
    captured_at: UtcDatetime
    read_at: UtcDatetime
    position: GeoPosition
    model_version: NonEmpty
    frames_seen: int = Field(default=1, ge=1)

    @field_validator("box")
    @classmethod
    def _box(cls, value: list[int]) -> list[int]:
        if value and (len(value) != 4 or value[0] > value[2] or value[1] > value[3]):
            raise ValueError("box is x1, y1, x2, y2 with x1<=x2 and y1<=y2")
        return value


class HotlistReason(str, Enum):
    STOLEN_VEHICLE = "STOLEN_VEHICLE"
    STOLEN_PLATE = "STOLEN_PLATE"
    WANTED_PERSON = "WANTED_PERSON"
    MISSING_PERSON = "MISSING_PERSON"
    AMBER_ALERT = "AMBER_ALERT"
    WARRANT = "WARRANT"
    OTHER = "OTHER"


class HotlistSource(str, Enum):
    STATE = "STATE"
    FEDERAL = "FEDERAL"
    LOCAL = "LOCAL"


class HotlistEntry(Record):
    avro_name: ClassVar[str] = "alpr.v1.HotlistEntry"
    plate: Plate
    state: NonEmpty
    reason: HotlistReason
    source: HotlistSource
    case_number: NonEmpty
    agency: NonEmpty
    entered_by: NonEmpty
    entered_at: UtcDatetime
    expires_at: UtcDatetime | None = None
    notes: str | None = None

    @property
    def key(self) -> str:
        return f"{self.state}:{self.plate}"


class PartialPlate(Record):
    avro_name: ClassVar[str] = "alpr.v1.PartialPlate"
    pattern_id: NonEmpty
    pattern: Annotated[str, Field(pattern=r"^[A-Z0-9?*]{1,16}$")]
    case_number: NonEmpty
    incident_type: NonEmpty
    agency: NonEmpty
    entered_by: NonEmpty
    entered_at: UtcDatetime
    expires_at: UtcDatetime
    notes: str | None = None


class MatchKind(str, Enum):
    EXACT = "EXACT"
    PARTIAL = "PARTIAL"
    POSSIBLE = "POSSIBLE"


class Alert(Record):
    avro_name: ClassVar[str] = "alpr.v1.Alert"
    alert_id: NonEmpty
    kind: MatchKind
    agency: NonEmpty
    read: PlateRead
    hotlist_entry: HotlistEntry | None = None
    partial: PartialPlate | None = None
    verify_before_action: NonEmpty
    notices: list[str] = Field(default_factory=list)
    raised_at: UtcDatetime


class AuditOutcome(str, Enum):
    ALLOWED = "ALLOWED"
    REFUSED = "REFUSED"
    DONE = "DONE"
    FAILED = "FAILED"


class AuditEvent(Record):
    avro_name: ClassVar[str] = "alpr.v1.AuditEvent"
    event_id: NonEmpty
    chain: NonEmpty
    seq: int = Field(ge=0)
    occurred_at: UtcDatetime
    actor: NonEmpty
    agency: NonEmpty
    action: NonEmpty
    outcome: AuditOutcome
    case_number: str | None = None
    purpose: str | None = None
    subject: str = ""
    reason: str | None = None
    rows: int | None = None
    details: dict[str, str] = Field(default_factory=dict)
    prev_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class AgencyType(str, Enum):
    LAW_ENFORCEMENT = "LAW_ENFORCEMENT"
    PROSECUTORIAL = "PROSECUTORIAL"
    OTHER = "OTHER"


class ReleaseStatus(str, Enum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    DENIED = "DENIED"
    EXPORTED = "EXPORTED"
    ROUTED_TO_RECORDS = "ROUTED_TO_RECORDS"


class ReleaseRequest(Record):
    avro_name: ClassVar[str] = "alpr.v1.ReleaseRequest"
    request_id: NonEmpty
    requesting_agency: NonEmpty
    agency_type: AgencyType
    requester: NonEmpty
    purpose: NonEmpty
    case_number: NonEmpty
    plates: list[Plate] = Field(min_length=1)
    scope_from: UtcDatetime
    scope_to: UtcDatetime
    document_ref: NonEmpty
    submitted_by: NonEmpty
    submitted_at: UtcDatetime
    status: ReleaseStatus
    reviewed_by: str | None = None
    reviewed_at: UtcDatetime | None = None
    review_reason: str | None = None
    exported_at: UtcDatetime | None = None
    export_sha256: str | None = None


class HoldStatus(str, Enum):
    ACTIVE = "ACTIVE"
    RELEASED = "RELEASED"


class EvidenceHold(Record):
    avro_name: ClassVar[str] = "alpr.v1.EvidenceHold"
    hold_id: NonEmpty
    case_number: NonEmpty
    reason: NonEmpty
    agency: NonEmpty
    read_ids: list[str] = Field(default_factory=list)
    plate: Plate | None = None
    range_from: UtcDatetime | None = None
    range_to: UtcDatetime | None = None
    placed_by: NonEmpty
    placed_at: UtcDatetime
    status: HoldStatus
    released_by: str | None = None
    released_at: UtcDatetime | None = None
    release_reason: str | None = None


class DeadLetter(Record):
    avro_name: ClassVar[str] = "alpr.v1.DeadLetter"
    source_topic: str
    source_partition: int
    source_offset: int
    consumer: str
    reason: str
    error_class: str
    key: bytes | None = None
    value: bytes | None = None
    failed_at: UtcDatetime


class UserRole(str, Enum):
    ANALYST = "ANALYST"
    SUPERVISOR = "SUPERVISOR"  # the designated approver of releases
    AUDITOR = "AUDITOR"
    ADMINISTRATOR = "ADMINISTRATOR"


USER_NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{1,63}\Z")


def _user_name(value: str) -> str:
    if not USER_NAME_RE.match(value):
        raise ValueError("user name must be 2-64 of a-z 0-9 . _ - starting with a letter")
    return value


UserName = Annotated[str, AfterValidator(_user_name)]


class User(Record):
    avro_name: ClassVar[str] = "alpr.v1.User"
    name: UserName
    role: UserRole
    agency: NonEmpty
    password_hash: Annotated[str, Field(pattern=r"^\$argon2id\$")]
    trained_at: UtcDatetime | None = None
    disabled: bool = False
    disabled_reason: str | None = None
    changed_by: NonEmpty
    changed_at: UtcDatetime


class LoginLockout(Record):
    avro_name: ClassVar[str] = "alpr.v1.LoginLockout"
    name: UserName
    agency: NonEmpty
    failures: int = Field(ge=0)
    last_failure_at: UtcDatetime | None = None
    locked_until: UtcDatetime | None = None
    changed_by: NonEmpty
    changed_at: UtcDatetime


class ProcessState(str, Enum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


class Heartbeat(Record):
    avro_name: ClassVar[str] = "alpr.v1.Heartbeat"
    instance_id: NonEmpty
    role: NonEmpty
    agency: NonEmpty
    host: NonEmpty
    pid: int
    state: ProcessState
    started_at: UtcDatetime
    at: UtcDatetime
    counters: dict[str, float] = Field(default_factory=dict)
    last_error: str | None = None
    metrics_url: str | None = None


RECORD_TYPES: tuple[type[Record], ...] = (
    Frame, PlateRead, HotlistEntry, PartialPlate, Alert, AuditEvent, ReleaseRequest, EvidenceHold, DeadLetter,
    User, LoginLockout, Heartbeat,
)
