"""Avro contracts (`*.avsc`) and their typed models (`schemas.models`)."""

from alpr.schemas.codec import Codec, UndecodableRecord
from alpr.schemas.models import (
    Alert, AuditEvent, DeadLetter, EvidenceHold, Frame, GeoPosition, HotlistEntry,
    PartialPlate, PlateRead, Record, ReleaseRequest, normalize_plate,
)

__all__ = [
    "Alert", "AuditEvent", "Codec", "DeadLetter", "EvidenceHold", "Frame", "GeoPosition",
    "HotlistEntry", "PartialPlate", "PlateRead", "Record", "ReleaseRequest", "UndecodableRecord",
    "normalize_plate",
]
