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
Faust table changelog recovery is not used: it trusts the high watermark, which some
brokers report short, and once restored a table with entries missing.

Shutdown: SIGTERM/SIGINT stop the app cleanly (committing what was processed); if
that has not finished within `alerts_stop_seconds`, the process exits hard. At most
some reads are then processed again (at-least-once); their alert ids are the same,
and the ledger recognises them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import sys
import threading
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from collections import OrderedDict
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import TextIO
from zoneinfo import ZoneInfo

from concurrent.futures import ThreadPoolExecutor

from alpr.alerting import dedup
from alpr.alerting.dedup import AlertLedger
from alpr.core import kafka
from alpr.alerting.geofence import Geofence, load_geofences, notices_for
from alpr.alerting.hotlist import HotlistIndex
from alpr.core.kafka import read_compacted
from alpr.core.logs import get_log
from alpr.core.metrics import ALERT_READS, ALERTS_RAISED
from alpr.alerting.partials import PatternIndex
from alpr.core.runtime import ProcessRuntime
from alpr.core.settings import Settings
from alpr.core.topics import ALERTS, DEADLETTER, HOTLIST, PARTIALS, READS
from alpr.schemas import (
    Alert,
    Codec,
    DeadLetter,
    HotlistEntry,
    PartialPlate,
    PlateRead,
    UndecodableRecord,
)

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
            # assign(), not subscribe(): every worker reads every partition; nothing is committed
            **{"fetch.wait.max.ms": 20}))  # another worker's alerts reach this ledger within ms (rebalances)
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


# --- the Faust app

def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{hp.strip()}" for hp in bootstrap.split(","))


def _credentials(settings: Settings):
    import ssl

    import faust

    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(ssl.create_default_context())
    if settings.kafka_security_protocol == "SASL_SSL":
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else "",
            mechanism="SCRAM-SHA-512", ssl_context=ssl.create_default_context())
    return None


class Marks:
    """Writes the ledger's marks: each after its alert's acknowledgement (see alpr.alerting.dedup)."""

    def __init__(self, settings: Settings, codec: Codec, ledger: AlertLedger) -> None:
        self.ledger = ledger
        self._pub = kafka.Publisher(settings, codec, "alerts-ledger")
        self.failed = 0
        self._next_prune = 0.0

    def after_ack(self, alert: Alert, fut) -> None:
        """Done-callback of an alert's send: mark it if the broker has it."""
        if fut.cancelled() or fut.exception() is not None:
            self.failed += 1  # not on the topic: no mark, so a re-processed read raises it again
            log.error("alert.not_acknowledged", alert_id=alert.alert_id)
            return
        meta = fut.result()
        self.mark(alert, meta.partition, meta.offset)

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


def build_app(settings: Settings, codec: Codec, follower: StateFollower, matcher: Matcher, marks: Marks):
    """The Faust app: one agent on the reads, one timer applying hotlist/pattern/ledger changes."""
    import faust

    _short_fetch_wait(settings.alerts_fetch_wait_ms)
    datadir = settings.data_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        APP_ID,
        broker=_broker_url(settings.kafka_bootstrap),
        broker_credentials=_credentials(settings),
        datadir=str(datadir),
        key_serializer="raw", value_serializer="raw",  # Avro bytes, decoded with schemas.Codec
        consumer_auto_offset_reset="earliest",         # a new group starts at the oldest read: none skipped
        broker_commit_interval=1.0,                    # at most ~1 s of reads re-processed after a crash
        broker_session_timeout=6.0,                    # a dead worker's reads move on in 6 s; joins are prompt
        broker_heartbeat_interval=1.5,
        broker_rebalance_timeout=10.0,                 # how long a join may wait for the other members
        producer_acks=-1,                              # an alert counts as sent when every replica has it
        topic_replication_factor=settings.kafka_replication_factor or 1,  # Faust's own leader topic only
        web_enabled=False,                             # no HTTP port: several workers share a host
    )
    reads = app.topic(READS, key_type=bytes, value_type=bytes)
    alerts = app.topic(ALERTS, key_type=bytes, value_type=bytes)
    deadletters = app.topic(DEADLETTER, key_type=bytes, value_type=bytes)
    counts = {"reads": 0, "alerts": 0, "dead_lettered": 0}

    async def dead_letter(message, reason: str, error_class: str) -> None:
        counts["dead_lettered"] += 1
        log.warning("read.dead_lettered", partition=message.partition, offset=message.offset, reason=reason[:200])
        dl = DeadLetter(source_topic=message.topic, source_partition=message.partition,
                        source_offset=message.offset, consumer=APP_ID, reason=reason, error_class=error_class,
                        key=message.key, value=message.value, failed_at=datetime.now(timezone.utc))
        await deadletters.send(key=READS.encode(), value=codec.encode(dl, DEADLETTER), force=True)

    @app.agent(reads)
    async def check_reads(stream):
        # Sends are not awaited one by one: Faust flushes the producer before it commits
        # the reads' offsets, so an offset is committed only after its alerts are acked.
        # Each alert is noted in the ledger when raised and marked on alpr.alert_dedup once acked.
        checked, dead = ALERT_READS.labels("checked"), ALERT_READS.labels("dead_lettered")
        async for event in stream.events():
            message = event.message
            counts["reads"] += 1
            try:
                read = codec.decode(message.value, PlateRead)
            except UndecodableRecord as exc:
                dead.inc()
                await dead_letter(message, exc.reason, "UndecodableRecord")
                continue
            try:
                raised = matcher.check(read)
            except Exception as exc:  # a bug must not stop every other read: park this one
                log.error("read.check_failed", read_id=read.read_id, error=repr(exc)[:200])
                dead.inc()
                await dead_letter(message, f"check failed: {exc!r}"[:1000], type(exc).__name__)
                continue
            checked.inc()
            for alert in raised:
                counts["alerts"] += 1
                ALERTS_RAISED.labels(alert.kind.value).inc()
                log.info("alert.raised", alert_id=alert.alert_id, kind=alert.kind.value, read_id=read.read_id,
                         camera_id=read.camera_id)
                fut = await alerts.send(key=read.plate.encode(), value=codec.encode(alert, ALERTS), force=True)
                fut.add_done_callback(functools.partial(marks.after_ack, alert))

    @app.timer(STATE_POLL_SECONDS)
    async def follow_state():
        follower.poll()
        marks.prune()
        app.on_loop()  # liveness: the event loop turns

    @app.timer(60.0)
    async def report():
        log.info("alerts.progress", **counts, suppressed=matcher.suppressed, hotlist=len(follower.state.hotlist),
                 patterns=len(follower.state.patterns), ledger=len(follower.state.ledger))

    app.counts = counts
    app.on_loop = lambda: None  # run_worker points it at the process health
    return app


def _short_fetch_wait(wait_ms: int) -> None:
    """Faust builds its aiokafka consumer with fetch_max_wait_ms=1500 and no setting for it.

    Measured on the dev broker, that wait showed up as read-to-alert latency (p50 about
    0.46 s at 100 reads/s with 1,500 ms, 52 ms with 50 ms): the broker answered a fetch only
    when the wait ran out. An alert is worth more than the fetch requests saved, so the
    worker's consumer waits at most the setting `alerts_fetch_wait_ms`. (Apache Kafka answers
    as soon as a record arrives; there the setting only bounds idle fetch traffic.)
    """
    from faust.transport.drivers import aiokafka as driver

    if getattr(driver.aiokafka.AIOKafkaConsumer, "_alpr_short_wait", False):
        driver.aiokafka.AIOKafkaConsumer.wait_ms = wait_ms
        return
    original = driver.aiokafka.AIOKafkaConsumer

    class Consumer(original):
        _alpr_short_wait = True
        wait_ms = 0

        def __init__(self, *args, **kwargs):
            if kwargs.get("group_id") is not None:
                kwargs["fetch_max_wait_ms"] = Consumer.wait_ms
            super().__init__(*args, **kwargs)

    Consumer.wait_ms = wait_ms
    driver.aiokafka.AIOKafkaConsumer = Consumer


def run_worker(settings: Settings, codec: Codec | None = None) -> None:
    """`alpr alerts`: load state, run the app until SIGTERM/SIGINT; exits hard if a stop overruns."""
    import faust

    codec = codec or Codec(settings.schema_registry_url)
    geofences = load_geofences(settings.geofences_file)
    kafka.check_reachable(settings)
    state = AlertState(hotlist=HotlistIndex(codec), ledger=AlertLedger(settings.alert_dedup_seconds))
    follower = StateFollower(settings, codec, state)
    unmarked = follower.load()
    marks = Marks(settings, codec, state.ledger)
    for alert, partition, offset in unmarked:  # raised before a crash, never marked: mark them now
        marks.mark(alert, partition, offset)
    matcher = Matcher(state, geofences)
    app = build_app(settings, codec, follower, matcher, marks)
    deadline = settings.alerts_stop_seconds

    class Worker(faust.Worker):
        def install_signal_handlers(self) -> None:
            # Our own handlers instead of mode's: signal.signal runs even when the loop is
            # busy, and a watchdog ends the process if the clean stop does not finish.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_stop_signal)

        def _on_stop_signal(self, signum, frame) -> None:
            if getattr(self, "_stopping_since", None):
                return
            self._stopping_since = True
            log.info("alerts.stopping", signal=signal.Signals(signum).name, deadline_s=deadline)
            watchdog = threading.Timer(deadline, _exit_hard, args=(deadline,))
            watchdog.daemon = True
            watchdog.start()
            self.loop.call_soon_threadsafe(self._schedule_shutdown, signal.Signals(signum))

        def on_worker_shutdown(self) -> None:
            follower.close()
            try:
                marks.flush()
            except Exception as exc:  # DeliveryFailed: those alerts are repeated at most, never lost
                log.warning("alerts.marks_unflushed", error=str(exc))

    log.info("alerts.starting", geofences=len(geofences), dedup_s=settings.alert_dedup_seconds)
    worker = Worker(app, loglevel=settings.log_level, override_logging=False, quiet=True,
                    redirect_stdouts=False)
    worker.spinner = None  # no terminal spinner: stdout is for output, not cursor codes
    # Metrics, heartbeats and lag like every other process; Faust's Worker keeps the signals.
    runtime = ProcessRuntime(settings, "alerts", counters=lambda: dict(app.counts), install_signals=False,
                             ready=lambda: bool(app.consumer.assignment()) or app.counts["reads"] > 0,
                             lag_of=((APP_ID, READS),))
    app.on_loop = runtime.health.beat
    with runtime:
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            log.info("alerts.stopped", **app.counts)
            raise SystemExit(exc.code) from None


def _exit_hard(deadline: float) -> None:
    log.error("alerts.stop_overran", deadline_s=deadline)
    sys.stderr.flush()
    os._exit(EXIT_HARD)
