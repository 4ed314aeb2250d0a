"""One alert per event, across restarts and rebalances: the alert ledger.

Consumes the topology's own alerts (once the broker has acknowledged each) and keeps,
per worker, what has been raised: every alert id, and the newest read per (plate,
camera, match) for the de-duplication window. Produces marks to the compacted topic
`alpr.alert_dedup` (one partition, keyed by a hash of plate, camera and match; the
value is the alert without its crop), which every worker follows and reads back on
start. So a read processed again after a `kill -9` or a rebalance yields the same
alert id and is recognised as already raised, and the window holds across restarts.

Why a mark is written only after its alert is acknowledged: a mark whose alert never
reached the topic would suppress that alert for good (a missed alert); the other way
round, an alert whose mark was lost is at worst repeated. To close that gap too,
each mark's headers name the alert's partition and offset, and a starting worker reads
every alert after the newest marked offset of each partition (a handful) back into
the ledger. One partition keeps marks in the order they were acknowledged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from alpr.core import kafka
from alpr.core.logs import get_log
from alpr.core.metrics import ALERTS_SUPPRESSED
from alpr.core.settings import Settings
from alpr.core.topics import ALERTS
from alpr.schemas import Alert, Codec, UndecodableRecord

log = get_log(__name__)

DEDUP = "alpr.alert_dedup"
H_PARTITION, H_OFFSET = "alerts-partition", "alerts-offset"


def window_key(plate: str, camera_id: str, match: str) -> str:
    """The mark's key: no plate in clear on a second topic, only what equality needs."""
    return hashlib.sha256(f"{plate}|{camera_id}|{match}".encode()).hexdigest()[:32]


def match_of(alert: Alert) -> str:
    """The match key an alert was raised for (the same string `alert_id` was derived from)."""
    if alert.hotlist_entry is not None:
        return f"H:{alert.hotlist_entry.key}"
    return f"P:{alert.partial.pattern_id}" if alert.partial is not None else ""


class AlertLedger:
    """What has been raised: alert ids and the de-duplication window, shared through `alpr.alert_dedup`."""

    def __init__(self, dedup_seconds: float) -> None:
        self.window = timedelta(seconds=dedup_seconds)
        self._last: dict[str, tuple[datetime, str]] = {}   # window key -> (captured_at, alert id)
        self._ids: dict[str, datetime] = {}                 # alert id -> captured_at of its read
        self._newest = datetime.min.replace(tzinfo=timezone.utc)
        self.marked: dict[int, int] = {}                    # alerts partition -> newest marked offset
        self._marked_keys: dict[int, str] = {}              # ... and the key of that mark (never tombstoned)
        self.suppressed = {"same_id": 0, "window": 0}

    def __len__(self) -> int:
        return len(self._ids)

    def seen(self, alert_id: str) -> bool:
        return alert_id in self._ids

    def suppress(self, alert_id: str, plate: str, camera_id: str, match: str, captured_at: datetime) -> bool:
        """True when this alert was raised already, or its (plate, camera, match) is inside the window."""
        if alert_id in self._ids:
            why = "same_id"
        elif self.window.total_seconds() > 0 and self._inside(window_key(plate, camera_id, match), captured_at):
            why = "window"
        else:
            return False
        self.suppressed[why] += 1
        ALERTS_SUPPRESSED.labels(why).inc()
        return True

    def _inside(self, key: str, at: datetime) -> bool:
        prev = self._last.get(key)
        return prev is not None and abs(at - prev[0]) < self.window

    def remember(self, alert: Alert) -> str:
        """Note a raised alert (ours, another worker's, or one read back); returns its window key."""
        r = alert.read
        key = window_key(r.plate, r.camera_id, match_of(alert))
        at = r.captured_at
        self._ids[alert.alert_id] = at
        prev = self._last.get(key)
        if prev is None or at >= prev[0]:
            self._last[key] = (at, alert.alert_id)
        if at > self._newest:
            self._newest = at
        return key

    def note_offset(self, partition: int, offset: int, key: str | None = None) -> None:
        if offset > self.marked.get(partition, -1):
            self.marked[partition] = offset
            if key is not None:
                self._marked_keys[partition] = key

    def forget(self, key: str) -> None:
        """A tombstone on the ledger topic: that window entry has expired."""
        prev = self._last.pop(key, None)
        if prev is not None:
            self._ids.pop(prev[1], None)

    def expired_keys(self) -> list[str]:
        """Window keys past the window (relative to the newest read seen), forgotten here and returned
        for tombstoning: the ledger topic, and so a start, holds about one window of alerts."""
        if not self._last:
            return []
        cutoff = self._newest - max(self.window, timedelta(seconds=60))
        keep = set(self._marked_keys.values())  # a start reads the alerts after these: keep them on the topic
        old = [k for k, (at, _) in self._last.items() if at < cutoff and k not in keep]
        for k in old:
            self.forget(k)
        self._ids = {i: at for i, at in self._ids.items() if at >= cutoff}
        return old

    def apply(self, codec: Codec, key: bytes | None, value: bytes | None, headers: Iterable | None) -> None:
        """One message of `alpr.alert_dedup` (ours or another worker's)."""
        h = dict(headers or ())
        k = (key or b"").decode()
        if H_PARTITION in h and H_OFFSET in h:
            self.note_offset(int(h[H_PARTITION]), int(h[H_OFFSET]), k)
        if value is None:
            self.forget(k)
            return
        try:
            self.remember(codec.decode(value, Alert))
        except UndecodableRecord as exc:
            log.error("dedup.undecodable", reason=exc.reason[:200])


def mark_of(alert: Alert) -> Alert:
    """The alert as the ledger keeps it: without the crop (the alert topic has it)."""
    if alert.read.crop_jpeg is None:
        return alert
    return alert.model_copy(update={"read": alert.read.model_copy(update={"crop_jpeg": None})})


def load(settings: Settings, codec: Codec, ledger: AlertLedger,
         idle: float = 0.25) -> tuple[dict[int, int], list[tuple[Alert, int, int]]]:
    """Read the ledger topic, then every alert after the newest marked one of each partition.

    Returns the ledger topic's next offset per partition (to follow it afterwards) and the
    alerts read back without a mark, as (alert, partition, offset): the worker died between
    their acknowledgement and their mark's. They are in the ledger now; the caller marks them."""
    latest: dict[str, object] = {}
    next_offsets: dict[int, int] = {}
    for p in kafka.partitions_of(settings, DEDUP):
        next_offsets[p] = 0
        for msg in kafka.read_to_end(settings, DEDUP, p, idle=idle):
            h = dict(msg.headers() or ())
            if H_PARTITION in h and H_OFFSET in h:
                ledger.note_offset(int(h[H_PARTITION]), int(h[H_OFFSET]), (msg.key() or b"").decode())
            latest[(msg.key() or b"").decode()] = msg
            next_offsets[p] = msg.offset() + 1
    for msg in latest.values():
        if msg.value() is not None:
            ledger.apply(codec, msg.key(), msg.value(), None)
    recovered: list[tuple[Alert, int, int]] = []
    for p, offset in sorted(ledger.marked.items()):
        for msg in kafka.read_to_end(settings, ALERTS, p, start=offset + 1, idle=idle):
            if msg.value() is None:
                continue
            try:
                alert = codec.decode(msg.value(), Alert)
            except UndecodableRecord:
                continue  # not ours to judge here; the operator view reports it
            if not ledger.seen(alert.alert_id):
                recovered.append((alert, p, msg.offset()))
            ledger.remember(alert)
            ledger.note_offset(p, msg.offset())
    log.info("dedup.loaded", alerts=len(ledger), recovered=len(recovered))
    return next_offsets, recovered
