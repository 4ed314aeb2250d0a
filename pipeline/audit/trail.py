"""The audit trail: every access and change, written before the result is released.

Each writer process appends to the single-partition audit topic in its own chain
segment: event n carries the hash of event n-1 of the same segment, and the first
event of a segment (seq 0, action CHAIN_START) carries the newest hash on the topic
when the segment began. So the whole topic forms one linked history across
restarts and several writer processes, without writers having to coordinate.

`verify_events` detects an altered event (its hash no longer matches its fields), a
removed or reordered one (a segment's seq or prev_hash breaks, or a segment start
links to a hash that is not earlier on the topic), and gaps in topic offsets.

`AuditLog.record` returns only after the broker acknowledged the event; if it
cannot, it raises AuditUnavailable and the caller must not release any data.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from alpr.core import kafka
from alpr.core.errors import AlprError, Unavailable
from alpr.core.logs import get_log
from alpr.core.metrics import AUDIT_WRITE_SECONDS
from alpr.core.settings import Settings
from alpr.core.topics import AUDIT
from alpr.schemas import AuditEvent, Codec, Record
from alpr.schemas.models import AuditOutcome

log = get_log(__name__)
GENESIS = "0" * 64
CHAIN_START = "CHAIN_START"


class AuditUnavailable(Unavailable):
    """The audit event was not acknowledged: no data may be returned, no change made."""


def event_hash(fields: dict) -> str:
    """sha256 over the canonical JSON of every field but `hash` itself."""
    canon = {k: _canon(v) for k, v in sorted(fields.items()) if k != "hash"}
    return hashlib.sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _canon(value):
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, AuditOutcome):
        return value.value
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in sorted(value.items())}
    return value


class AuditLog:
    """Appends hash-chained events for one writer process; thread-safe."""

    def __init__(self, settings: Settings, codec: Codec, writer: str, ack_timeout: float = 5.0) -> None:
        self.settings, self.codec, self.writer = settings, codec, writer
        self._publisher = kafka.Publisher(settings, codec, f"audit-{writer}",
                                          # fail within the deadline instead of retrying for minutes
                                          **{"message.timeout.ms": int(ack_timeout * 1000)})
        self._ack_timeout = ack_timeout
        self._lock = threading.Lock()
        self._chain: str | None = None
        self._seq = 0
        self._prev = GENESIS

    def record(self, *, actor: str, agency: str, action: str, outcome: str, case_number: str | None = None,
               purpose: str | None = None, subject: str = "", reason: str | None = None, rows: int | None = None,
               details: dict[str, str] | None = None) -> AuditEvent:
        """Write one event and wait for the broker's acknowledgement."""
        with self._lock:
            if self._chain is None:
                try:
                    self._start_segment()
                except AuditUnavailable:
                    raise
                except Exception as exc:  # the tail could not be read: the broker is not there
                    raise AuditUnavailable(f"audit trail unavailable, nothing was done: {exc}") from None
            return self._append(actor=actor, agency=agency, action=action, outcome=outcome,
                                case_number=case_number, purpose=purpose, subject=subject, reason=reason,
                                rows=rows, details=details or {})

    def _start_segment(self) -> None:
        tail = latest_hash(self.settings, self.codec, timeout=self._ack_timeout)
        self._chain = f"{self.writer}:{uuid.uuid4().hex[:12]}"
        self._seq, self._prev = 0, tail
        self._append(actor=f"system:{self.writer}", agency=self.settings.agency, action=CHAIN_START,
                     outcome="DONE", subject=self._chain, reason=None, case_number=None, purpose=None, rows=None,
                     details={"host": socket.gethostname(), "pid": str(os.getpid())})

    def _append(self, **fields) -> AuditEvent:
        body = dict(event_id=uuid.uuid4().hex, chain=self._chain, seq=self._seq,
                    occurred_at=datetime.now(timezone.utc), prev_hash=self._prev, **fields)
        event = AuditEvent(**body, hash=event_hash(AuditEvent(**body, hash=GENESIS).model_dump()))
        try:
            with AUDIT_WRITE_SECONDS.time():
                self._publisher.publish(AUDIT, event.actor, event)
                self._publisher.flush(self._ack_timeout + 1)
        except Exception as exc:
            # The event may or may not be on the topic: begin a fresh segment next time,
            # linked to whatever the topic then ends with.
            self._chain = None
            log.error("audit.write_failed", action=event.action, event_id=event.event_id, error=str(exc))
            raise AuditUnavailable(f"audit trail unavailable, nothing was done: {exc}") from None
        self._seq, self._prev = self._seq + 1, event.hash
        log.debug("audit.written", event_id=event.event_id, action=event.action, seq=event.seq)
        return event


def latest_hash(settings: Settings, codec: Codec, timeout: float = 10.0) -> str:
    """Hash of the newest event on the audit topic, or GENESIS if it is empty."""
    low, high = kafka.high_watermark(settings, AUDIT, timeout=timeout)
    newest = GENESIS
    for msg in kafka.read_to_end(settings, AUDIT, start=max(low, high - 1), idle=0.3):
        newest = codec.decode(msg.value(), AuditEvent).hash
    return newest


@dataclass
class ChainReport:
    events: int = 0
    segments: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_events(events: Iterable[tuple[int, AuditEvent]]) -> ChainReport:
    """Check (offset, event) pairs in topic order; every problem is named with its offset."""
    report = ChainReport()
    seen_hashes: set[str] = {GENESIS}
    heads: dict[str, AuditEvent] = {}
    expected_offset = None
    for offset, ev in events:
        report.events += 1
        if expected_offset is not None and offset != expected_offset:
            report.problems.append(f"offsets {expected_offset}..{offset - 1} missing from the topic")
        expected_offset = offset + 1
        if event_hash(ev.model_dump()) != ev.hash:
            report.problems.append(f"offset {offset}: event {ev.event_id} altered (hash does not match its fields)")
        if ev.seq == 0:
            report.segments += 1
            if ev.action != CHAIN_START:
                report.problems.append(f"offset {offset}: segment {ev.chain} does not begin with {CHAIN_START}")
            if ev.prev_hash not in seen_hashes:
                report.problems.append(f"offset {offset}: segment {ev.chain} links to an event not on the topic "
                                       "before it (removed or reordered)")
        else:
            head = heads.get(ev.chain)
            if head is None:
                report.problems.append(f"offset {offset}: segment {ev.chain} has no start (removed)")
            elif ev.seq != head.seq + 1 or ev.prev_hash != head.hash:
                report.problems.append(f"offset {offset}: segment {ev.chain} breaks after seq {head.seq} "
                                       f"(got seq {ev.seq}: an event removed, reordered or altered)")
        heads[ev.chain] = ev
        seen_hashes.add(ev.hash)
    return report


def read_events(settings: Settings, codec: Codec, topic: str = AUDIT) -> list[tuple[int, AuditEvent]]:
    """The whole audit topic (or a copy of it, e.g. restored from backup), decoded, in order.
    An undecodable event is itself tampering."""
    out = []
    for msg in kafka.read_to_end(settings, topic):
        out.append((msg.offset(), codec.decode(msg.value(), AuditEvent)))
    return out


Change = tuple[str, "str | bytes | None", "Record | None"]  # topic, key, record (None: tombstone)


def publish_audited(audit: AuditLog, publisher: kafka.Publisher, changes: Sequence[Change], *, actor: str,
                    agency: str, action: str, case_number: str | None = None, purpose: str | None = None,
                    subject: str = "", reason: str | None = None, rows: int | None = None,
                    details: dict[str, str] | None = None, outcome: str = "ALLOWED",
                    timeout: float = 15.0) -> AuditEvent:
    """The one way a person's change reaches a topic: audit it, publish, wait for the acks.

    The event (ALLOWED, or DONE where the change files a finished step) is on file before
    anything is published (no audit, no change). A change
    the broker did not acknowledge is audited again as FAILED, so the trail never claims a
    change that did not happen, and the caller gets Unavailable saying nothing changed.
    """
    event = dict(actor=actor, agency=agency, action=action, case_number=case_number, purpose=purpose,
                 subject=subject, rows=rows, details=details)
    allowed = audit.record(outcome=outcome, reason=reason, **event)
    try:
        for topic, key, record in changes:
            publisher.publish(topic, key, record)
        publisher.flush(timeout)
    except AlprError as exc:
        try:
            audit.record(outcome="FAILED", reason=str(exc)[:500], **event)
        except AlprError as audit_exc:
            log.error("audit.failure_not_recorded", action=action, subject=subject, error=str(audit_exc))
        raise Unavailable(f"{action}: the change did not reach the broker ({exc}); nothing changed, "
                          "try again") from None
    log.info("change.published", action=action, subject=subject, records=len(changes))
    return allowed
