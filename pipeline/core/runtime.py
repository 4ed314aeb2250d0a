"""What every long-running process shares: signals, a shutdown deadline, metrics, heartbeats.

    with ProcessRuntime(settings, "worker", counters=..., ready=...) as rt:
        worker.run(rt.stop)

First SIGTERM/SIGINT sets `rt.stop`: the process stops fetching, finishes and
publishes its batch, commits and leaves its group. If it has not exited within
`shutdown_deadline_s`, or a second signal comes, it exits at once (uncommitted
input is simply read again by the group). Heartbeats go to `alpr.status` so
`alpr status` sees each instance, its counters and its last error, and sees a
stopped one as down.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timezone

from alpr.core import kafka
from alpr.core.logs import get_log
from alpr.core.metrics import Health, MetricsServer
from alpr.core.settings import Settings
from alpr.core.topics import STATUS
from alpr.schemas import Codec
from alpr.schemas.models import Heartbeat, ProcessState

log = get_log(__name__)


class ProcessRuntime:
    def __init__(self, settings: Settings, role: str, counters: Callable[[], dict[str, float]] = dict,
                 ready: Callable[[], bool] = lambda: True, install_signals: bool = True,
                 lag_of: tuple[tuple[str, str], ...] = (), lag_interval_s: float = 15.0) -> None:
        self.settings, self.role = settings, role
        self.instance_id = settings.instance_id or f"{role}@{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()
        self.health = Health(settings.liveness_timeout_s)
        self.health.set_ready_check(ready)
        self.last_error: str | None = None
        self._counters = counters
        self._install_signals = install_signals
        self._started = datetime.now(timezone.utc)
        self._done = threading.Event()
        self._publisher = kafka.Publisher(settings, Codec(settings.schema_registry_url), f"status-{role}",
                                          **{"message.timeout.ms": 5000})  # a heartbeat is stale after seconds
        self.metrics: MetricsServer | None = None
        self._lag_of, self._lag_interval = lag_of, lag_interval_s

    def __enter__(self) -> "ProcessRuntime":
        if self._install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.metrics = MetricsServer(self.settings.bind_host, self.settings.metrics_port, self.health).start()
        log.info("process.started", role=self.role, instance=self.instance_id, metrics=self.metrics.url)
        self._beat(ProcessState.STARTING)
        threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()
        if self._lag_of:
            threading.Thread(target=self._report_lag, name="lag", daemon=True).start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.last_error = f"{type(exc).__name__}: {exc}"
        self.stop.set()
        self._done.set()
        self._beat(ProcessState.STOPPED)
        try:
            self._publisher.flush(5)
        except Exception as exc:  # the broker is gone; nothing more to tell it
            log.warning("process.final_heartbeat_unsent", role=self.role, error=str(exc))
        if self.metrics:
            self.metrics.stop()
        log.info("process.stopped", role=self.role, instance=self.instance_id)

    def _on_signal(self, signum, frame) -> None:
        if self.stop.is_set():
            log.warning("process.exit_now", role=self.role, signal=signum)
            os._exit(128 + signum)
        log.info("process.stopping", role=self.role, signal=signum, deadline_s=self.settings.shutdown_deadline_s)
        self.stop.set()
        threading.Thread(target=self._deadline, name="shutdown-deadline", daemon=True).start()

    def _deadline(self) -> None:
        if not self._done.wait(self.settings.shutdown_deadline_s):
            log.error("process.deadline_exceeded", role=self.role, deadline_s=self.settings.shutdown_deadline_s)
            os._exit(1)

    def _heartbeats(self) -> None:
        while not self._done.wait(self.settings.heartbeat_interval_s):
            self._beat(ProcessState.STOPPING if self.stop.is_set() else ProcessState.RUNNING)

    def _report_lag(self) -> None:
        from alpr.core.lag import group_lag
        from alpr.core.metrics import CONSUMER_LAG
        from alpr.core.topics import TOPICS

        while not self._done.is_set():
            for group, topic in self._lag_of:
                try:
                    for p in group_lag(self.settings, group, topic, TOPICS[topic].partitions):
                        CONSUMER_LAG.labels(group, topic, str(p.partition)).set(p.lag)
                except Exception as exc:
                    log.warning("lag.failed", group=group, topic=topic, error=str(exc))
            self._done.wait(self._lag_interval)

    def _beat(self, state: ProcessState) -> None:
        try:
            counters = {k: float(v) for k, v in self._counters().items()}
        except Exception as exc:  # a counters callback must never kill the heartbeat
            counters = {}
            self.last_error = f"counters: {exc}"
            log.warning("process.counters_failed", role=self.role, error=str(exc))
        hb = Heartbeat(instance_id=self.instance_id, role=self.role, agency=self.settings.agency,
                       host=socket.gethostname(), pid=os.getpid(), state=state, started_at=self._started,
                       at=datetime.now(timezone.utc), counters=counters, last_error=self.last_error,
                       metrics_url=self.metrics.url if self.metrics else None)
        try:
            self._publisher.publish(STATUS, self.instance_id, hb)
        except Exception as exc:
            log.warning("heartbeat.failed", role=self.role, error=str(exc))
