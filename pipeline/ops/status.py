"""`alpr status`: one screen a person reads in five seconds.

Built from the heartbeats every long-running process publishes to `alpr.status`
(alpr.core.runtime) plus consumer-group lag computed against the true partition
end (alpr.core.lag). An instance silent for `down_after` seconds is DOWN; a stage
whose instances are all down or stopped is DOWN.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from alpr.core import kafka
from alpr.core.logs import get_log
from alpr.core.settings import Settings
from alpr.core.topics import STATUS
from alpr.schemas import Codec
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
        return {k: max(0.0, (v - self.previous.counters.get(k, 0.0)) / dt) for k, v in self.latest.counters.items()}


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

    def render(self, lags: dict[str, int | None], now: datetime | None = None) -> str:
        now = now or datetime.now(timezone.utc)
        roles = list(STAGES) + sorted({i.latest.role for i in self.instances.values()} - set(STAGES))
        lines = [f"alpr status  {now:%Y-%m-%d %H:%M:%S}Z  kafka {self.settings.kafka_bootstrap}",
                 f"{'STAGE':<10} {'STATE':<8} {'UP':>5} {'THROUGHPUT':<28} {'LAG':>8}  LAST ERROR"]
        for role in roles:
            insts = [i for i in self.instances.values() if i.latest.role == role]
            recent = [i for i in insts if (now - i.latest.at).total_seconds() < 3600]
            up = [i for i in recent if i.state(now, self.down_after) in ("running", "starting", "stopping")]
            if not recent:
                state = "-"
            else:
                state = "UP" if up else "DOWN"
            rates: dict[str, float] = {}
            for inst in up:
                for k, v in inst.rates().items():
                    rates[k] = rates.get(k, 0.0) + v
            throughput = ", ".join(f"{v:.1f} {k}/s" for k, v in sorted(rates.items())) or "-"
            lag = lags.get(role)
            errors = [i.latest.last_error for i in recent if i.latest.last_error]
            lines.append(f"{role:<10} {state:<8} {len(up):>2}/{len(recent):<2} {throughput:<28} "
                         f"{'-' if lag is None else lag:>8}  {(errors[-1] if errors else '-')[:60]}")
        for inst in sorted(self.instances.values(), key=lambda i: (i.latest.role, i.latest.instance_id)):
            if (now - inst.latest.at).total_seconds() < 3600:
                lines.append(f"  {inst.latest.instance_id:<40} {inst.state(now, self.down_after):<9} "
                             f"seen {(now - inst.latest.at).total_seconds():5.1f}s ago  {inst.latest.metrics_url or ''}")
        return "\n".join(lines)


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
        while time.monotonic() < deadline:
            for msg in self._consumer.consume(1000, 0.2):
                if msg.error() or msg.value() is None:
                    continue
                try:
                    self.board.add(self.codec.decode(msg.value(), Heartbeat))
                except Exception as exc:  # a bad heartbeat must not blind the status view
                    log.warning("status.bad_heartbeat", offset=msg.offset(), error=str(exc))
                    continue

    def lags(self) -> dict[str, int | None]:
        from alpr.core.lag import group_lag
        from alpr.core.topics import TOPICS

        out: dict[str, int | None] = {}
        for role, spec in STAGES.items():
            if spec is None:
                continue
            group, topic = spec
            try:
                out[role] = sum(p.lag for p in group_lag(self.settings, group, topic, TOPICS[topic].partitions))
            except Exception as exc:  # lag unknown is shown as such, not as zero
                log.warning("status.lag_unknown", role=role, error=str(exc))
                out[role] = None
        return out

    def close(self) -> None:
        self._consumer.close()


def show(settings: Settings, watch: bool, interval: float = 2.0, stop: threading.Event | None = None,
         echo=print) -> str:
    follower = StatusFollower(settings)
    try:
        follower.poll(1.5)
        screen = follower.board.render(follower.lags())
        echo(screen)
        while watch and not (stop and stop.is_set()):
            follower.poll(interval)
            screen = follower.board.render(follower.lags())
            echo("\033[2J\033[H" + screen)
        return screen
    finally:
        follower.close()
