"""The alert topology: plate reads in, alerts out.

Consumes PlateRead from `alpr.reads` (a consumer group with committed offsets, so a
worker that was down picks up where it stopped) and publishes Alert to `alpr.alerts`
keyed by plate: EXACT (the plate is on the hotlist), PARTIAL (it fits a partial-plate
pattern of a major crime), POSSIBLE (a hotlist plate is one OCR confusion away, or the
plate matches but the read's state differs). Every alert carries the CLETS
verification notice and the notices of the geofences the read was made in. The same
plate at the same camera raises one alert per match per `alert_dedup_seconds`, and a
read processed again (after a crash or a rebalance) raises nothing new: both are
decided by the alert ledger (`alpr.alerting.dedup`), which survives restarts on the
compacted topic `alpr.alert_dedup`. Undecodable reads go to `alpr.deadletter` and
processing goes on.

Hotlist and pattern state: every worker holds the whole hotlist (POSSIBLE and PARTIAL
matches do not follow the read's partition), built at start from the compacted topics
with `kafka.read_compacted` and then followed on all their partitions. Hotlist
entries are filed by the plate their key names and decoded only when a read looks
that plate up, so a start with 100,000 entries costs reading them, not decoding them.
No changelog recovery is trusted: Faust's reads "until the high watermark", which some
brokers report short, and once restored a table with entries missing.

The worker is one librdkafka consumer loop (it was a Faust agent): per read, Faust's
stream machinery and aiokafka's Python fetch path cost more CPU than matching the
read, and on a shared 2-core box that CPU was read-to-alert latency (docs/benchmarks.md).
The loop waits only for the first read of a batch, produces each alert at once
(linger 0), and commits a batch's offsets every COMMIT_SECONDS after its alerts are
acknowledged (at-least-once).

Shutdown: SIGTERM/SIGINT stop the loop cleanly (committing what was processed); if
that has not finished within `alerts_stop_seconds`, the process exits hard. At most
some reads are then processed again (at-least-once); their alert ids are the same,
and the ledger recognises them.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import os
import signal
import sys
import threading
import time as _time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import TextIO
from zoneinfo import ZoneInfo

from confluent_kafka import KafkaError, KafkaException

from alpr.alerting import dedup
from alpr.alerting.dedup import AlertLedger
from alpr.alerting.geofence import Geofence, load_geofences, notices_for
from alpr.alerting.hotlist import HotlistIndex
from alpr.alerting.partials import PatternIndex
from alpr.core import kafka
from alpr.core.errors import DeliveryFailed
from alpr.core.kafka import read_compacted
from alpr.core.logs import get_log
from alpr.core.metrics import ALERT_READS, ALERTS_RAISED
from alpr.core.runtime import ProcessRuntime
from alpr.core.settings import Settings
from alpr.core.topics import ALERTS, HOTLIST, PARTIALS, READS
from alpr.schemas import Alert, Codec, HotlistEntry, PartialPlate, PlateRead, UndecodableRecord

log = get_log(__name__)

APP_ID = "alpr-alerts"  # also the consumer group of the reads
VERIFY_NOTICE = ("ALPR alert only: confirm through CLETS before any enforcement action; "
                 "do not act on this alert alone.")
STATE_POLL_SECONDS = 0.05  # how often hotlist/pattern/ledger changes are applied while running
# read_to_end's quiet time once past the reported end. The reported end may fall short by one
# batch, and a batch arrives whole, so a short quiet time suffices; 1 s per topic was a third of a start.
LOAD_IDLE_SECONDS = 0.25
PRUNE_EVERY_SECONDS = 10.0  # how often the ledger looks for entries past the window
EXIT_HARD = 70            # exit status when a clean stop overran its deadline
COMMIT_SECONDS = 0.5      # reads re-processed after a crash: about this much (the ledger absorbs them)


# --- state: the whole hotlist and every pattern, per worker

@dataclass
class AlertState:
    hotlist: HotlistIndex
    patterns: PatternIndex = field(default_factory=PatternIndex)
    ledger: AlertLedger = field(default_factory=lambda: AlertLedger(0))
    undecodable: int = 0

    def apply(self, codec: Codec, topic: str, key: bytes | None, value: bytes | None,
              where: str = "", headers=None) -> None:
        """One message of alpr.hotlist, alpr.partials or alpr.alert_dedup; a null value removes the key."""
        k = (key or b"").decode()
        try:
            if topic == HOTLIST:
                self.hotlist.put_raw(k, value)  # decoded when a read looks its plate up
            elif topic == dedup.DEDUP:
                self.ledger.apply(codec, key, value, headers)
            else:
                self.patterns.put(k, None if value is None else codec.decode(value, PartialPlate))
        except UndecodableRecord as exc:
            # Not dead-lettered: this is read again at every start. It is loud instead.
            self.undecodable += 1
            log.error("state.undecodable", topic=topic, where=where, reason=exc.reason[:200])


class StateFollower:
    """Builds AlertState from the compacted topics, then keeps it current (no consumer group)."""

    def __init__(self, settings: Settings, codec: Codec, state: AlertState) -> None:
        self.settings, self.codec, self.state = settings, codec, state
        self._consumer = None

    def load(self) -> list[tuple[Alert, int, int]]:
        """Hotlist, patterns and the alert ledger, read in parallel; returns alerts that still need a mark."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        t0 = _time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            compacted = {t: pool.submit(read_compacted, self.settings, t, LOAD_IDLE_SECONDS)
                         for t in (HOTLIST, PARTIALS)}
            ledger = pool.submit(dedup.load, self.settings, self.codec, self.state.ledger, LOAD_IDLE_SECONDS)
            assignment = []
            for topic, fut in compacted.items():
                latest, next_offsets = fut.result()
                for key, msg in latest.items():
                    self.state.apply(self.codec, topic, msg.key(), msg.value(), f"{msg.partition()}@{msg.offset()}")
                assignment += [TopicPartition(topic, p, o or OFFSET_BEGINNING) for p, o in next_offsets.items()]
            ledger_offsets, unmarked = ledger.result()
        assignment += [TopicPartition(dedup.DEDUP, p, o or OFFSET_BEGINNING) for p, o in ledger_offsets.items()]
        log.info("state.loaded", hotlist=len(self.state.hotlist), patterns=len(self.state.patterns),
                 ledger=len(self.state.ledger), unmarked=len(unmarked), undecodable=self.state.undecodable,
                 seconds=round(_time.monotonic() - t0, 2))
        self._consumer = Consumer(kafka.consumer_config(
            self.settings, f"{APP_ID}-state", "alerts-state",
            # assign(), not subscribe(): every worker reads every partition; nothing is committed.
            # Changes and other workers' marks apply within a fraction of a second; a shorter wait
            # would cost idle fetches on five partitions, CPU the reads need on a small box.
            **{"fetch.wait.max.ms": 100}))
        self._consumer.assign(assignment)
        return unmarked

    def poll(self, max_records: int = 1000) -> int:
        """Apply what arrived since the last poll; never blocks."""
        n = 0
        for msg in self._consumer.consume(max_records, 0):
            if msg.error():
                continue
            self.state.apply(self.codec, msg.topic(), msg.key(), msg.value(), f"{msg.partition()}@{msg.offset()}",
                             msg.headers())
            n += 1
        return n

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


# --- matching: one read in, its alerts out

def alert_id(read_id: str, match: str) -> str:
    """Stable per (read, match): a read processed twice yields the same alert id."""
    return hashlib.sha256(f"{read_id}|{match}".encode()).hexdigest()[:24]


class Matcher:
    """Hotlist, partial-pattern and confusion lookups, geofence notices and the ledger's de-duplication."""

    def __init__(self, state: AlertState, geofences: list[Geofence]) -> None:
        self.state, self.geofences = state, geofences

    @property
    def suppressed(self) -> int:
        return sum(self.state.ledger.suppressed.values())

    def check(self, read: PlateRead, now: datetime | None = None) -> list[Alert]:
        """The read's new alerts; each is noted in the ledger at once (a mark follows its acknowledgement)."""
        now = now or datetime.now(timezone.utc)
        found: list[tuple[str, str, HotlistEntry | None, PartialPlate | None, list[str]]] = []
        hot = self.state.hotlist
        for e in hot.lookup(read.plate, now):
            if read.plate_state and read.plate_state.upper() != e.state:
                found.append(("POSSIBLE", f"H:{e.key}", e, None, [
                    f"POSSIBLE: plate matches but the read's state {read.plate_state} differs from the "
                    f"hotlist state {e.state}."]))
            else:
                found.append(("EXACT", f"H:{e.key}", e, None, []))
        for e, swap in hot.possible(read.plate, now):
            found.append(("POSSIBLE", f"H:{e.key}", e, None, [
                f"POSSIBLE: read {read.plate} is one OCR confusion ({swap}) from hotlist plate {e.plate}; "
                "compare the plate in the image."]))
        for p in self.state.patterns.match(read.plate, now):
            found.append(("PARTIAL", f"P:{p.pattern_id}", None, p, [
                f"PARTIAL: fits pattern {p.pattern} of case {p.case_number} ({p.incident_type}); "
                "the full plate is not known."]))
        if not found:
            return []
        places = notices_for(self.geofences, read.position.lat, read.position.lon)
        ledger = self.state.ledger
        out, seen = [], set()
        for kind, match, entry, partial, notes in found:
            if match in seen:  # e.g. EXACT and a confusion of the same entry cannot both alert
                continue
            seen.add(match)
            aid = alert_id(read.read_id, match)
            if ledger.suppress(aid, read.plate, read.camera_id, match, read.captured_at):
                continue
            alert = Alert(alert_id=aid, kind=kind, agency=read.agency, read=read, hotlist_entry=entry,
                          partial=partial, verify_before_action=VERIFY_NOTICE, notices=notes + places,
                          raised_at=now)
            ledger.remember(alert)
            out.append(alert)
        return out


# --- the operator's view

def local_time(at: datetime, zone: tzinfo) -> str:
    """A time as a dispatcher reads it: the installation's zone, named."""
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def expiry_text(expires_at: datetime | None, zone: tzinfo) -> str:
    """An expiry as it was entered: a bare date ("through that day", stored as the next midnight UTC)
    is shown as that date; a time is shown in the installation's zone."""
    if expires_at is None:
        return "none"
    utc = expires_at.astimezone(timezone.utc)
    if utc.time() == time(0):
        return (utc - timedelta(days=1)).date().isoformat()
    return local_time(expires_at, zone)


def _zone(zone: tzinfo | str | None) -> tzinfo:
    if zone is None:
        from alpr.core.settings import settings

        zone = settings().timezone
    return ZoneInfo(zone) if isinstance(zone, str) else zone


def format_alert(alert: Alert, zone: tzinfo | str | None = None) -> str:
    """One alert as a person reads it (plates shown: this view is for the operator).

    Times are in `zone` (default: the installation's, setting `timezone`) with the zone named."""
    tz = _zone(zone)
    r = alert.read
    lines = [f"*** {alert.kind.value} ALERT  plate {r.plate}" + (f" ({r.plate_state})" if r.plate_state else "")]
    if alert.hotlist_entry is not None:
        e = alert.hotlist_entry
        lines.append(f"    hotlist {e.state} {e.plate}: {e.reason.value}  case {e.case_number}  "
                     f"({e.source.value} list, {e.agency}; expires {expiry_text(e.expires_at, tz)})")
    if alert.partial is not None:
        p = alert.partial
        lines.append(f"    partial {p.pattern}: {p.incident_type}  case {p.case_number}  ({p.agency}, "
                     f"entered by {p.entered_by}; expires {expiry_text(p.expires_at, tz)})")
    pos = r.position
    heading = f" heading {pos.heading_deg:.0f}" if pos.heading_deg is not None else ""
    lines.append(f"    seen {local_time(r.captured_at, tz)}  camera {r.camera_id} ({r.agency})  "
                 f"at {pos.lat:.5f}, {pos.lon:.5f}{heading}")
    lines.append(f"    read {r.read_id}  confidence {r.confidence:.2f}  crop {'yes' if r.crop_jpeg else 'no'}  "
                 f"alert {alert.alert_id}")
    lines += [f"    NOTICE: {n}" for n in alert.notices]
    lines.append(f"    {alert.verify_before_action}")
    return "\n".join(lines)


SHOWN_IDS_KEPT = 100_000  # alert ids the operator view remembers, to never show one twice


def follow(settings: Settings, codec: Codec, out: TextIO, from_beginning: bool = False,
           stop: Callable[[], bool] = lambda: False) -> int:
    """Print alerts as they arrive until `stop()` is true; returns how many were printed.

    An alert id already shown is not shown again: the worker's ledger prevents repeats, and
    this is the second guard (a worker killed between an alert and its mark, two workers
    in a rebalance)."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    from alpr.core.kafka import partitions_of

    parts = partitions_of(settings, ALERTS)
    c = Consumer(kafka.consumer_config(settings, f"{APP_ID}-follow", "alerts-follow",
                                       **{"fetch.wait.max.ms": 100}))  # an operator waits on each alert
    # assign(), not subscribe(): every operator sees every alert. OFFSET_END may start a
    # little early on brokers whose high watermark is short; that repeats, never skips.
    c.assign([TopicPartition(ALERTS, p, OFFSET_BEGINNING if from_beginning else OFFSET_END) for p in parts])
    shown = 0
    shown_ids: OrderedDict[str, None] = OrderedDict()
    zone = ZoneInfo(settings.timezone)
    try:
        while not stop():
            for msg in c.consume(100, 0.5):
                if msg.error() or msg.value() is None:
                    continue
                try:
                    alert = codec.decode(msg.value(), Alert)
                except UndecodableRecord as exc:
                    out.write(f"!!! undecodable alert at {ALERTS}[{msg.partition()}]@{msg.offset()}: {exc.reason}\n")
                    continue
                if alert.alert_id in shown_ids:
                    log.info("follow.repeat_hidden", alert_id=alert.alert_id, partition=msg.partition(),
                             offset=msg.offset())
                    continue
                shown_ids[alert.alert_id] = None
                if len(shown_ids) > SHOWN_IDS_KEPT:
                    shown_ids.popitem(last=False)
                out.write(format_alert(alert, zone) + "\n\n")
                out.flush()
                shown += 1
    finally:
        c.close()
    return shown


# --- the worker: one librdkafka consumer loop

class Marks:
    """Writes the ledger's marks: each after its alert's acknowledgement (see alpr.alerting.dedup)."""

    def __init__(self, settings: Settings, codec: Codec, ledger: AlertLedger) -> None:
        self.ledger = ledger
        self._pub = kafka.Publisher(settings, codec, "alerts-ledger",
                                    **{"linger.ms": 20})  # marks are not on any alert's path: batch them
        self.failed = 0
        self._next_prune = 0.0

    def poll(self) -> None:
        self._pub.poll(0)

    def mark(self, alert: Alert, partition: int, offset: int) -> None:
        r = alert.read
        key = dedup.window_key(r.plate, r.camera_id, dedup.match_of(alert))
        self.ledger.note_offset(partition, offset, key)
        self._pub.publish(dedup.DEDUP, key, dedup.mark_of(alert),
                          headers={dedup.H_PARTITION: str(partition), dedup.H_OFFSET: str(offset)})

    def prune(self) -> int:
        """Tombstone ledger entries past the window, so the topic (and the next start) stays small."""
        if _time.monotonic() < self._next_prune:
            return 0
        self._next_prune = _time.monotonic() + PRUNE_EVERY_SECONDS
        old = self.ledger.expired_keys()
        for key in old:
            self._pub.publish(dedup.DEDUP, key, None)
        return len(old)

    def flush(self, timeout: float = 5.0) -> None:
        self._pub.flush(timeout)


class ReadConsumer(kafka.RecordConsumer):
    """The reads, in the group APP_ID; on revoke, what was processed is flushed and committed first."""

    def __init__(self, settings: Settings, codec: Codec, deadletters: kafka.Publisher,
                 before_revoke: Callable[[], None]) -> None:
        self._before_revoke = before_revoke
        super().__init__(settings, codec, APP_ID, [READS], PlateRead, deadletters, client_id="alerts", **{
            # The broker holds a fetch up to this long when no read is waiting; on brokers that hold
            # it to the limit even when one arrives, it is read-to-alert latency (setting's doc).
            "fetch.wait.max.ms": settings.alerts_fetch_wait_ms,
        })

    def _on_revoke(self, consumer, partitions) -> None:
        # The partitions may go to another worker: hand them over with their alerts acked and
        # their offsets committed, so it re-processes nothing (and the ledger has nothing to catch).
        try:
            self._before_revoke()
        except Exception as exc:  # DeliveryFailed or a commit error: the new owner re-processes instead
            log.error("alerts.revoke_commit_failed", error=str(exc))
        super()._on_revoke(consumer, partitions)

    def commit_async(self) -> None:
        """Commit what was consumed without waiting for the answer; a lost commit re-processes, no more."""
        try:
            self._consumer.commit(asynchronous=True)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise

    def next_batch(self, max_records: int, timeout: float) -> list:
        """Waits up to `timeout` for the first read only, then takes what is already fetched.

        (`consume(n, timeout)` would wait for n reads or the whole timeout: latency.)"""
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        out: list = []
        for msg in [first, *self._consumer.consume(max_records - 1, 0)]:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume.error", group=self.group, error=msg.error().str())
                continue
            try:
                out.append(kafka.Received(msg, self.codec.decode(msg.value(), PlateRead)))
            except UndecodableRecord as exc:
                self.dead_letter(msg, exc.reason, "UndecodableRecord")
                ALERT_READS.labels("dead_lettered").inc()
        return out


class AlertWorker:
    """reads -> Matcher -> alerts, committing a read's offset only after its alerts are acknowledged."""

    def __init__(self, settings: Settings, codec: Codec, follower: StateFollower, matcher: Matcher,
                 marks: Marks) -> None:
        from confluent_kafka import Producer

        self.settings, self.codec, self.follower, self.matcher, self.marks = settings, codec, follower, matcher, marks
        self.counts = {"reads": 0, "alerts": 0, "dead_lettered": 0}
        self.stop = threading.Event()
        self.on_loop: Callable[[], None] = lambda: None
        self._producer = Producer(kafka.producer_config(
            settings, "alerts",
            **{"linger.ms": 0}))  # an alert goes out at once: latency, not batching, is what counts here
        self._failed: list[str] = []
        self.deadletters = kafka.Publisher(settings, codec, "alerts-deadletters")
        self.consumer = ReadConsumer(settings, codec, self.deadletters, self.commit)
        self._uncommitted = 0

    def _acked(self, alert: Alert, err, msg) -> None:
        """Delivery report of one alert: mark it in the ledger, or remember the failure."""
        if err is not None:
            self._failed.append(err.str())
            log.error("alert.not_acknowledged", alert_id=alert.alert_id, error=err.str())
            return
        self.marks.mark(alert, msg.partition(), msg.offset())

    def commit(self, block: bool = True) -> bool:
        """Every alert so far acknowledged (and marked), then the reads' offsets committed.

        `block=False` (the loop's periodic commit) commits only if no alert is waiting for its
        acknowledgement, and without waiting for the broker's answer: a blocking flush and
        commit every half second were the read-to-alert p99 on a busy box. Returns whether
        it committed. (On revoke and at shutdown it blocks: the partitions are handed over.)"""
        if not self._uncommitted:
            return True
        if not block and len(self._producer):
            return False  # acks outstanding: the next turn of the loop tries again
        remaining = self._producer.flush(30 if block else 0)
        failed, self._failed = self._failed, []
        if remaining or failed:
            # Not committed: these reads are processed again by whoever owns them next.
            raise DeliveryFailed(f"{remaining} alerts unacknowledged, {len(failed)} failed"
                                 + (f": {failed[0]}" if failed else ""))
        self.deadletters.flush(30)
        if block:
            self.consumer.commit()
        else:
            self.consumer.commit_async()
        self._uncommitted = 0
        return True

    def process(self, batch: list) -> None:
        checked = ALERT_READS.labels("checked")
        for item in batch:
            read = item.record
            self.counts["reads"] += 1
            try:
                raised = self.matcher.check(read)
            except Exception as exc:  # a bug must not stop every other read: park this one
                log.error("read.check_failed", read_id=read.read_id, error=repr(exc)[:200])
                self.consumer.dead_letter(item.message, f"check failed: {exc!r}"[:1000], type(exc).__name__)
                ALERT_READS.labels("dead_lettered").inc()
                continue
            checked.inc()
            for alert in raised:
                self.counts["alerts"] += 1
                ALERTS_RAISED.labels(alert.kind.value).inc()
                log.info("alert.raised", alert_id=alert.alert_id, kind=alert.kind.value, read_id=read.read_id,
                         camera_id=read.camera_id)
                self._produce(read.plate.encode(), self.codec.encode(alert, ALERTS), alert)
        self._uncommitted += len(batch)

    def _produce(self, key: bytes, value: bytes, alert: Alert) -> None:
        while True:
            try:
                self._producer.produce(ALERTS, key=key, value=value,
                                       on_delivery=functools.partial(self._acked, alert))
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: serve delivery reports, then retry

    def run(self) -> None:
        next_state = next_commit = _time.monotonic()
        try:
            while not self.stop.is_set():
                batch = self.consumer.next_batch(500, STATE_POLL_SECONDS)
                if batch:
                    self.process(batch)
                self._producer.poll(0)  # delivery reports: marks follow acknowledgements
                self.marks.poll()
                now = _time.monotonic()
                if now >= next_state:
                    self.follower.poll()
                    self.marks.prune()
                    self.on_loop()
                    next_state = now + STATE_POLL_SECONDS
                if now >= next_commit and self.commit(block=now >= next_commit + COMMIT_SECONDS):
                    next_commit = now + COMMIT_SECONDS
            self.commit()
        finally:
            self.counts["dead_lettered"] = self.consumer.dead_lettered
            self.consumer.close()  # leaves the group: the partitions move without a session timeout
            self.follower.close()
            try:
                self.marks.flush()
            except DeliveryFailed as exc:  # those alerts are repeated at most, never lost
                log.warning("alerts.marks_unflushed", error=str(exc))


def run_worker(settings: Settings, codec: Codec | None = None) -> None:
    """`alpr alerts`: load state, run the loop until SIGTERM/SIGINT; exits hard if a stop overruns."""
    codec = codec or Codec(settings.schema_registry_url)
    geofences = load_geofences(settings.geofences_file)
    kafka.check_reachable(settings)
    state = AlertState(hotlist=HotlistIndex(codec), ledger=AlertLedger(settings.alert_dedup_seconds))
    follower = StateFollower(settings, codec, state)
    marks = Marks(settings, codec, state.ledger)
    # Subscribed before the state is loaded: the group join (3 s on a broker with the default
    # group.initial.rebalance.delay.ms) runs while the topics are read. No read is processed before
    # the load is done: partitions are taken (on_assign) only by the loop's first poll.
    worker = AlertWorker(settings, codec, follower, Matcher(state, geofences), marks)
    unmarked = follower.load()
    for alert, partition, offset in unmarked:  # raised before a crash, never marked: mark them now
        marks.mark(alert, partition, offset)
    # The loaded state (100,000 entries, their dicts, the pattern index) lives as long as the
    # process: keep it out of the collector's full passes, which otherwise walk all of it while
    # reads wait.
    gc.collect()
    gc.freeze()
    deadline = settings.alerts_stop_seconds

    def on_stop_signal(signum, frame) -> None:
        if worker.stop.is_set():
            return
        log.info("alerts.stopping", signal=signal.Signals(signum).name, deadline_s=deadline)
        watchdog = threading.Timer(deadline, _exit_hard, args=(deadline,))
        watchdog.daemon = True
        watchdog.start()
        worker.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_stop_signal)
    log.info("alerts.starting", geofences=len(geofences), dedup_s=settings.alert_dedup_seconds)
    # Metrics, heartbeats and lag like every other process; the signals stay ours (deadline above).
    runtime = ProcessRuntime(settings, "alerts", counters=lambda: dict(worker.counts), install_signals=False,
                             ready=lambda: bool(worker.consumer.assigned) or worker.counts["reads"] > 0,
                             lag_of=((APP_ID, READS),))
    worker.on_loop = runtime.health.beat
    with runtime:
        worker.run()
        log.info("alerts.stopped", **worker.counts, **{f"suppressed_{k}": v for k, v in state.ledger.suppressed.items()})


def _exit_hard(deadline: float) -> None:
    log.error("alerts.stop_overran", deadline_s=deadline)
    sys.stderr.flush()
    os._exit(EXIT_HARD)
