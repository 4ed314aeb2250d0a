"""`alpr status`: one screen a person reads in five seconds (or one JSON document for scripts).

Built from the heartbeats every long-running process publishes to `alpr.status`
(alpr.core.runtime) plus consumer-group lag computed against the true partition
end (alpr.core.lag).

Liveness comes from heartbeats alone: an instance silent for `down_after` seconds
(three heartbeat intervals, at least 6 s) is DOWN, judged against the clock read
right after the heartbeats were read. Lag is slow to compute (it reads the tail of
every partition; seconds on the dev broker), so a background probe refreshes it
while the screen is drawn from whatever it last found, with its age: a slow lag
probe can never make a live stage look dead, nor hold up `--watch`.

The SQL proxy that `alpr warehouse` hosts in embedded mode has no heartbeat of its
own: it is shown under the warehouse instance that hosts it (heartbeat counter
`proxy_hosted`).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from alpr.core import kafka
from alpr.core.errors import AlprError
from alpr.core.logs import get_log
from alpr.core.settings import Settings
from alpr.core.topics import STATUS
from alpr.schemas import Codec, UndecodableRecord
from alpr.schemas.models import Heartbeat, ProcessState

log = get_log(__name__)

# Stage -> (consumer group, input topic) whose lag the stage answers for. Order is pipeline order.
STAGES: dict[str, tuple[str, str] | None] = {
    "camera": None,
    "worker": ("alpr-recognition", "alpr.frames"),
    "alerts": ("alpr-alerts", "alpr.reads"),
    "warehouse": ("warehouse-reads", "alpr.reads"),
    "proxy": None,
}
LIVE = ("running", "starting", "stopping")
NOT_RATES = {"proxy_hosted", "proxy_port"}  # facts about the process, not counters
RECENT_S = 3600.0


@dataclass
class Instance:
    latest: Heartbeat
    previous: Heartbeat | None = None

    def state(self, now: datetime, down_after: float) -> str:
        if self.latest.state == ProcessState.STOPPED:
            return "stopped"
        if (now - self.latest.at).total_seconds() > down_after:
            return "down"
        return self.latest.state.value.lower()

    def rates(self) -> dict[str, float]:
        if self.previous is None:
            return {}
        dt = (self.latest.at - self.previous.at).total_seconds()
        if dt <= 0:
            return {}
        return {k: max(0.0, (v - self.previous.counters.get(k, 0.0)) / dt)
                for k, v in self.latest.counters.items() if k not in NOT_RATES}

    @property
    def hosted_proxy_port(self) -> int | None:
        c = self.latest.counters
        return int(c.get("proxy_port", 0)) if c.get("proxy_hosted") else None


@dataclass
class Lags:
    """The lag probe's last answer: records behind per stage (None: unknown) and when it was taken."""

    values: dict[str, int | None] = field(default_factory=dict)
    at: datetime | None = None


@dataclass
class StatusBoard:
    """Heartbeats folded per instance; fed from the status topic."""

    settings: Settings
    instances: dict[str, Instance] = field(default_factory=dict)

    def add(self, hb: Heartbeat) -> None:
        inst = self.instances.get(hb.instance_id)
        if inst is None:
            self.instances[hb.instance_id] = Instance(hb)
        elif hb.at >= inst.latest.at:
            inst.previous, inst.latest = inst.latest, hb

    @property
    def down_after(self) -> float:
        return max(3 * self.settings.heartbeat_interval_s, 6.0)

    def snapshot(self, lags: Lags | dict[str, int | None] | None = None, now: datetime | None = None) -> dict:
        """Everything the screen shows, as data (what `alpr status --json` prints)."""
        now = now or datetime.now(timezone.utc)
        if not isinstance(lags, Lags):
            lags = Lags(dict(lags or {}), now if lags else None)
        recent = [i for i in self.instances.values() if (now - i.latest.at).total_seconds() < RECENT_S]
        roles = list(STAGES) + sorted({i.latest.role for i in recent} - set(STAGES))
        stages = []
        for role in roles:
            insts = [i for i in recent if i.latest.role == role]
            up = [i for i in insts if i.state(now, self.down_after) in LIVE]
            hosts = []
            if role == "proxy":  # the embedded proxy lives inside a warehouse process
                hosts = [i for i in recent if i.hosted_proxy_port is not None]
                up += [i for i in hosts if i.state(now, self.down_after) in LIVE]
                insts = insts + hosts
            rates: dict[str, float] = {}
            for inst in up:
                if inst.latest.role != role:
                    continue
                for k, v in inst.rates().items():
                    rates[k] = rates.get(k, 0.0) + v
            errors = [i.latest.last_error for i in insts if i.latest.last_error]
            stages.append({
                "stage": role, "state": "-" if not insts else ("UP" if up else "DOWN"),
                "up": len(up), "instances": len(insts), "throughput_per_s": {k: round(v, 1) for k, v in sorted(rates.items())},
                "lag": lags.values.get(role), "last_error": errors[-1] if errors else None,
                "hosted_in": [i.latest.instance_id for i in hosts]})
        instances = [{
            "instance": i.latest.instance_id, "role": i.latest.role, "state": i.state(now, self.down_after),
            "seen_s_ago": round((now - i.latest.at).total_seconds(), 1), "metrics_url": i.latest.metrics_url,
            "hosts_proxy_port": i.hosted_proxy_port}
            for i in sorted(recent, key=lambda i: (i.latest.role, i.latest.instance_id))]
        return {"at": now.isoformat(), "kafka": self.settings.kafka_bootstrap, "down_after_s": self.down_after,
                "lag_at": lags.at.isoformat() if lags.at else None, "stages": stages, "instances": instances}

    def render(self, lags: Lags | dict[str, int | None] | None = None, now: datetime | None = None) -> str:
        return render_text(self.snapshot(lags, now))


def render_text(snap: dict) -> str:
    now = datetime.fromisoformat(snap["at"])
    lag_note = "lag: probing" if snap["lag_at"] is None else \
        f"lag as of {(now - datetime.fromisoformat(snap['lag_at'])).total_seconds():.0f}s ago"
    lines = [f"alpr status  {now:%Y-%m-%d %H:%M:%S}Z  kafka {snap['kafka']}  ({lag_note})",
             f"{'STAGE':<10} {'STATE':<8} {'UP':>5} {'THROUGHPUT':<28} {'LAG':>8}  LAST ERROR"]
    for st in snap["stages"]:
        throughput = ", ".join(f"{v:.1f} {k}/s" for k, v in st["throughput_per_s"].items()) or "-"
        note = (st["last_error"] or "-")[:60]
        if st["hosted_in"]:
            note = f"in {', '.join(st['hosted_in'])}" + ("" if note == "-" else f"; {note}")
        lag = st["lag"]
        lines.append(f"{st['stage']:<10} {st['state']:<8} {st['up']:>2}/{st['instances']:<2} {throughput:<28} "
                     f"{'-' if lag is None else lag:>8}  {note}")
    for inst in snap["instances"]:
        extra = f"  hosts proxy :{inst['hosts_proxy_port']}" if inst["hosts_proxy_port"] is not None else ""
        lines.append(f"  {inst['instance']:<40} {inst['state']:<9} seen {inst['seen_s_ago']:5.1f}s ago  "
                     f"{inst['metrics_url'] or ''}{extra}")
    return "\n".join(lines)


def stage_lags(settings: Settings) -> dict[str, int | None]:
    """Records behind per stage, the stages probed in parallel (each reads its partitions' tails)."""
    from alpr.core.lag import group_lag
    from alpr.core.topics import TOPICS

    def one(spec: tuple[str, str]) -> int | None:
        group, topic = spec
        try:
            return sum(p.lag for p in group_lag(settings, group, topic, TOPICS[topic].partitions))
        except (AlprError, KafkaException, RuntimeError, OSError) as exc:  # unknown is shown as such, not as 0
            log.warning("status.lag_unknown", group=group, error=str(exc)[:200])
            return None

    probed = {role: spec for role, spec in STAGES.items() if spec is not None}
    with ThreadPoolExecutor(max_workers=len(probed)) as pool:
        return dict(zip(probed, pool.map(one, probed.values())))


class LagProbe:
    """Refreshes stage lags on a thread; `latest` is never blocked by a probe in progress."""

    def __init__(self, settings: Settings, every_s: float = 5.0) -> None:
        self.settings, self.every_s = settings, every_s
        self.latest = Lags()
        self.first = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-lag", daemon=True)

    def start(self) -> "LagProbe":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            values = stage_lags(self.settings)
            self.latest = Lags(values, datetime.now(timezone.utc))
            self.first.set()
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()


class StatusFollower:
    """Keeps a StatusBoard current from the status topic (read from the start, then followed)."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.codec = settings, Codec(settings.schema_registry_url)
        self.board = StatusBoard(settings)
        self._consumer = Consumer(kafka.consumer_config(settings, "status-view", "status",
                                                        logger=kafka._QUIET_LOG))
        self._consumer.assign([TopicPartition(STATUS, 0, OFFSET_BEGINNING)])

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            for msg in self._consumer.consume(1000, max(0.0, min(0.2, deadline - time.monotonic()))):
                if msg.error() or msg.value() is None:
                    continue
                try:
                    self.board.add(self.codec.decode(msg.value(), Heartbeat))
                except UndecodableRecord as exc:  # a bad heartbeat must not blind the status view
                    log.warning("status.bad_heartbeat", offset=msg.offset(), error=exc.reason[:200])
            if time.monotonic() >= deadline:
                return

    def lags(self) -> dict[str, int | None]:
        return stage_lags(self.settings)

    def close(self) -> None:
        self._consumer.close()


def show(settings: Settings, watch: bool, interval: float = 2.0, stop: threading.Event | None = None,
         echo=print, as_json: bool = False, lag_wait_s: float = 15.0) -> str:
    """Print the board once (after the first lag probe, up to `lag_wait_s`), or every `interval` with --watch.

    Each screen is drawn right after reading the heartbeats, with the clock read then."""
    follower = StatusFollower(settings)
    probe = LagProbe(settings, every_s=max(interval, 2.0)).start()
    try:
        follower.poll(1.0)
        if not watch:
            probe.first.wait(lag_wait_s)  # one screen: worth waiting for the lag ...
            follower.poll(0.3)            # ... then catch up on heartbeats sent meanwhile
        while True:
            snap = follower.board.snapshot(probe.latest, datetime.now(timezone.utc))
            screen = json.dumps(snap) if as_json else render_text(snap)
            echo(screen if not watch or as_json else "\033[2J\033[H" + screen)
            if not watch or (stop and stop.is_set()):
                return screen
            follower.poll(interval)
    finally:
        probe.stop()
        follower.close()
