"""`alpr warehouse`: the long-running process that owns ClickHouse's side of the pipeline.

It hosts, each in its own thread:
- three sinks (alpr.warehouse.sink): alpr.reads -> reads, alpr.alerts -> alerts,
  alpr.audit -> audit_log;
- the holds applier: alpr.holds -> holds, held_reads, held_reads_dict (alpr.warehouse.holds);
- the daily retention run (alpr.warehouse.retention.DailyRetention);
- any extra in-process services (anything with start()/stop(), e.g. the SQL proxy and
  the control endpoint for custodial commands, alpr.warehouse.control), because in
  embedded mode only one process may open the chDB directory.

The main loop beats the process's health (`/healthz`) every half second while every
part's thread is alive; a crashed part stops the beats and winds the process down.

Shutdown (SIGTERM/SIGINT in the command, or `stop` set by a host): each loop
finishes its batch, commits and closes its consumer; extra services are stopped;
all within `shutdown_deadline_s` (less a second, so the runtime's hard exit never
cuts a commit short), after which the run returns anyway.

Embedded mode: the process holds an exclusive lock on `data_dir/warehouse.lock`
while it runs; `open_store_for_command` sees it and hands a one-shot command the
running warehouse's store through the control endpoint instead of opening chDB.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from alpr.warehouse import holds
from alpr.warehouse import sink
from alpr.audit.trail import AuditLog
from alpr.core.errors import AlprError, Unavailable
from alpr.core.kafka import Publisher, RecordConsumer
from alpr.core.logs import get_log
from alpr.core.migrations import available, current_version
from alpr.warehouse.retention import DailyRetention
from alpr.core.settings import Settings
from alpr.core.store import Store, open_store
from alpr.core.topics import HOLDS
from alpr.schemas import Codec, EvidenceHold

log = get_log(__name__)
IN_USE = ("the embedded store is in use by `alpr warehouse`; stop it or use a ClickHouse server "
          "(ALPR_CLICKHOUSE_URL)")


class Service(Protocol):
    """Something the warehouse hosts in its process: started after the sinks, stopped first."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def _lock_path(settings: Settings) -> Path:
    return settings.data_dir / "warehouse.lock"


@contextmanager
def embedded_lock(settings: Settings) -> Iterator[None]:
    """Held by `alpr warehouse` for as long as it owns the embedded store."""
    path = _lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Unavailable("`alpr warehouse` is already running on this data directory "
                              f"({settings.data_dir})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock


def warehouse_running(settings: Settings) -> bool:
    path = _lock_path(settings)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def open_store_for_command(settings: Settings) -> Store:
    """The store for a one-shot command: a server directly; embedded, chDB itself when no warehouse
    runs, else the running warehouse's store through its control endpoint."""
    from alpr.warehouse.control import RemoteStore

    if not settings.clickhouse_url and warehouse_running(settings):
        store: Store = RemoteStore(settings)
    else:
        try:
            store = open_store(settings)
        except Unavailable:
            if not settings.clickhouse_url and warehouse_running(settings):  # it started meanwhile
                store = RemoteStore(settings)
            else:
                raise
    have, want = current_version(store, settings), max(m.version for m in available())
    if have != want:
        store.close()
        raise AlprError(f"the ClickHouse schema is at version {have or 'none'}, this program needs {want}: "
                        "run `alpr migrate` first")
    return store


class Warehouse:
    """Sinks + holds applier + daily retention + hosted services, over one store."""

    def __init__(self, settings: Settings, store: Store, codec: Codec, *, group_prefix: str = "warehouse",
                 topics: dict[str, str] | None = None, daily_retention: bool = True) -> None:
        """`topics` maps a table ('reads', 'alerts', 'audit_log', 'holds') to another topic (tests)."""
        self.settings, self.store, self.codec = settings, store, codec
        topics = topics or {}
        self.deadletters = Publisher(settings, codec, f"{group_prefix}-deadletters")
        self.audit = AuditLog(settings, codec, group_prefix)
        # Active plate + time-range holds: reads that arrive in a held range are held as they are stored.
        self.ranges = holds.ActiveRanges().load(store, settings)
        self.loops: list[sink.ConsumerLoop] = [
            sink.table_loop(settings, codec, store, spec, self.deadletters, f"{group_prefix}-{spec.table}",
                            topics.get(spec.table),
                            after_write=self._hold_arrivals if spec is sink.READS_SPEC else None)
            for spec in sink.SPECS]
        holds_consumer = RecordConsumer(settings, codec, f"{group_prefix}-holds", [topics.get("holds", HOLDS)],
                                        EvidenceHold, self.deadletters, client_id=f"{group_prefix}-holds")
        self.holds_loop = sink.ConsumerLoop("holds", holds_consumer, self.deadletters, store, self._apply_holds,
                                            settings)
        self.loops.append(self.holds_loop)
        self.retention = DailyRetention(store, settings, codec, self.audit) if daily_retention else None
        self.failed: list[str] = []

    def _apply_holds(self, batch: list[EvidenceHold]) -> int:
        self.ranges.update(batch)  # first: a read stored while apply() expands is matched by the sink
        return holds.apply(self.store, self.settings, batch).held_rows_added

    def _hold_arrivals(self, reads: list) -> None:
        holds.cover(self.store, self.settings, self.ranges.covering(reads))

    def counters(self) -> dict[str, float]:
        """For heartbeats and metrics: rows written and outages per loop."""
        out: dict[str, float] = {}
        for lp in self.loops:
            out[f"{lp.name}_written"] = lp.written
            out[f"{lp.name}_outages"] = lp.outages
        return out

    def ready(self) -> bool:
        """Every consumer has joined its group and none is paused by a ClickHouse outage."""
        return all(lp.consumer.joined and not lp.paused.is_set() for lp in self.loops)

    def summary(self) -> dict:
        """What the process prints when it stops."""
        return {"stopped": "warehouse", **{f"{lp.name}_consumed": lp.consumed for lp in self.loops},
                **{f"{lp.name}_written": lp.written for lp in self.loops},
                "retention_runs": len(self.retention.runs) if self.retention else 0,
                "failed": self.failed}

    def run(self, stop: threading.Event, extra_services: Sequence[Service] = (),
            beat: Callable[[], None] = lambda: None) -> None:
        """Run until `stop` is set, then shut down within the deadline. Raises if a part crashed.

        `beat` is called from this loop about twice a second while every part's thread is alive
        (the process's liveness)."""
        inner = threading.Event()  # set on `stop` or when any part crashes: everything winds down
        workers: list[tuple[str, Callable[[threading.Event], None]]] = [(lp.name, lp.run) for lp in self.loops]
        if self.retention is not None:
            workers.append(("retention", self.retention.run))
        threads = [threading.Thread(target=self._guard, args=(name, fn, inner), name=f"warehouse-{name}",
                                    daemon=True) for name, fn in workers]
        for t in threads:
            t.start()
        started: list[Service] = []
        try:
            for service in extra_services:
                service.start()
                started.append(service)
            log.info("warehouse.running", loops=len(self.loops), services=len(started))
            while not stop.is_set() and not inner.is_set():
                if all(t.is_alive() for t in threads):
                    beat()
                stop.wait(0.5)
        finally:
            deadline = time.monotonic() + max(1.0, self.settings.shutdown_deadline_s - 1.0)
            inner.set()
            for service in reversed(started):
                try:
                    service.stop()
                except Exception as exc:
                    log.error("warehouse.service_stop_failed", service=type(service).__name__, error=str(exc))
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            late = [t.name for t in threads if t.is_alive()]
            if late:
                log.error("warehouse.shutdown_late", threads=",".join(late))
            try:
                self.deadletters.flush(max(1.0, deadline - time.monotonic()))
            except Exception as exc:
                log.error("warehouse.deadletter_flush_failed", error=str(exc))
            log.info("warehouse.stopped", written=sum(lp.written for lp in self.loops))
        if self.failed:
            raise RuntimeError(f"warehouse part(s) crashed: {', '.join(self.failed)}")

    def _guard(self, name: str, fn: Callable[[threading.Event], None], inner: threading.Event) -> None:
        try:
            fn(inner)
        except Exception as exc:
            self.failed.append(name)
            log.error("warehouse.part_crashed", part=name, error=str(exc)[:300], exc_info=True)
            inner.set()
