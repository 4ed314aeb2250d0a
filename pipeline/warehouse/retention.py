"""Retention: reads (and their alerts) older than `retention_days` are purged unless held.

Both agency policies keep ALPR data at least one year (Government Code 34090.6) and
purge it after that, unless it is held as evidence. Two mechanisms do it:

- the reads TTL (002_reads.sql): a background safety net, evaluated against now()
  when parts merge, which may be late;
- `enforce` (`alpr retention enforce`, and daily inside `alpr warehouse`): the purge
  made to happen now. It first applies every hold on the `alpr.holds` topic
  (re-expanding plate ranges) and reloads the holds dictionary, counts what goes and
  what is kept, writes the PURGE audit event with those counts, then runs
  `ALTER TABLE ... DELETE` and waits for it. If holds or the audit trail cannot be
  read or written, nothing is purged (fail closed).

`--as-of` simulates an earlier date (an explicit DELETE, since a TTL only knows
now()); a date in the future is refused, since it would purge reads younger than
the retention period.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from alpr.warehouse import holds
from alpr.audit.trail import AuditLog
from alpr.core.errors import AlprError, Refused
from alpr.core.logs import get_log
from alpr.core.settings import MIN_RETENTION_DAYS, Settings
from alpr.core.sql import ts_lit
from alpr.core.store import Store, StoreError
from alpr.schemas import Codec

log = get_log(__name__)
PURGE = "PURGE"
SYSTEM_ACTOR = "system:retention"


def _predicate(db: str, cutoff: datetime, held: bool) -> str:
    return (f"captured_at < {ts_lit(cutoff)} AND "
            f"{'' if held else 'NOT '}dictHas('{db}.held_reads_dict', tuple(read_id))")


def enforce(store: Store, settings: Settings, codec: Codec, audit: AuditLog, *, as_of: datetime | None = None,
            actor: str = SYSTEM_ACTOR, now: datetime | None = None) -> dict:
    """Purge what retention allows as of `as_of` (default now); returns the counts."""
    if settings.retention_days < MIN_RETENTION_DAYS:  # Settings refuses it too; a purge re-checks (fail closed)
        raise Refused(f"retention_days {settings.retention_days} is below {MIN_RETENTION_DAYS}")
    now = now or datetime.now(timezone.utc)
    as_of = as_of or now
    if as_of > now:
        raise Refused(f"--as-of {as_of.isoformat()} is in the future: that would purge reads younger than "
                      f"{settings.retention_days} days")
    db = settings.clickhouse_database
    applied = holds.sync(store, settings, codec)  # every hold on the topic is in the dictionary before counting
    cutoff = as_of - timedelta(days=settings.retention_days)
    purge, keep = _predicate(db, cutoff, held=False), _predicate(db, cutoff, held=True)
    purged = int(store.scalar(f"SELECT count() FROM {db}.reads FINAL WHERE {purge}"))
    held_kept = int(store.scalar(f"SELECT count() FROM {db}.reads FINAL WHERE {keep}"))
    alert_purge = (f"captured_at < {ts_lit(cutoff)} AND "
                   f"NOT dictHas('{db}.held_reads_dict', tuple(read_id))")
    alerts_purged = int(store.scalar(f"SELECT count() FROM {db}.alerts FINAL WHERE {alert_purge}"))
    counts = {"purged": purged, "held_kept": held_kept, "alerts_purged": alerts_purged,
              "as_of": as_of.isoformat(), "cutoff": cutoff.isoformat()}
    # The audit event comes first: if it cannot be written, nothing is deleted.
    audit.record(actor=actor, agency=settings.agency, action=PURGE, outcome="ALLOWED", rows=purged,
                 subject=f"{db}.reads captured before {cutoff.isoformat()}",
                 purpose=f"retention {settings.retention_days} days",
                 details={"purged": str(purged), "held_kept": str(held_kept), "alerts_purged": str(alerts_purged),
                          "as_of": as_of.isoformat(), "cutoff": cutoff.isoformat(), "holds": str(applied.holds)})
    try:
        if purged:
            # mutations_sync=2: return only when every replica has rewritten its parts
            store.command(f"ALTER TABLE {db}.reads DELETE WHERE {purge} SETTINGS mutations_sync = 2")
        if alerts_purged:
            store.command(f"ALTER TABLE {db}.alerts DELETE WHERE {alert_purge} SETTINGS mutations_sync = 2")
    except Exception as exc:
        audit.record(actor=actor, agency=settings.agency, action=PURGE, outcome="FAILED", rows=purged,
                     subject=f"{db}.reads", reason=str(exc)[:500])
        raise
    log.info("retention.enforced", purged=purged, held_kept=held_kept, alerts_purged=alerts_purged)
    return counts


def ensure_ttl(store: Store, settings: Settings) -> bool:
    """Make the reads/alerts TTL match `retention_days` (the DDL got the value when it was applied).

    Returns True if it changed anything. `materialize_ttl_after_modify = 0`: changing the
    TTL must not start a rewrite of every part; `enforce` does the purging.
    """
    db, days = settings.clickhouse_database, settings.retention_days
    changed = False
    for table, column in (("reads", "captured_at"), ("alerts", "raised_at")):
        ddl = store.scalar(f"SELECT create_table_query FROM system.tables WHERE database = '{db}' "
                           f"AND name = '{table}'") or ""
        if f"toIntervalDay({days})" in ddl:
            continue
        store.command(f"ALTER TABLE {db}.{table} MODIFY TTL toDateTime({column}) + INTERVAL {days} DAY "
                      f"DELETE WHERE NOT dictHas('{db}.held_reads_dict', tuple(read_id)) "
                      "SETTINGS materialize_ttl_after_modify = 0")
        log.info("retention.ttl_changed", table=table, days=days)
        changed = True
    return changed


def next_run(after: datetime, at: str) -> datetime:
    """The first `at` (HH:MM UTC) strictly after `after`."""
    hh, mm = (int(x) for x in at.split(":"))
    candidate = after.astimezone(timezone.utc).replace(hour=hh, minute=mm, second=0, microsecond=0)
    return candidate if candidate > after else candidate + timedelta(days=1)


class DailyRetention:
    """Runs `enforce` once a day at `retention_run_at` inside the warehouse (a thread)."""

    def __init__(self, store: Store, settings: Settings, codec: Codec, audit: AuditLog) -> None:
        self.store, self.settings, self.codec, self.audit = store, settings, codec, audit
        self.runs: list[dict] = []
        self.next_at = next_run(datetime.now(timezone.utc), settings.retention_run_at)

    def run_now(self) -> None:
        """Make the next run due at once (operators, tests)."""
        self.next_at = datetime.now(timezone.utc)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            wait = (self.next_at - datetime.now(timezone.utc)).total_seconds()
            if wait > 0:
                stop.wait(min(wait, 1.0))  # short steps: `run_now` and a stop are noticed within a second
                continue
            try:
                self.runs.append(enforce(self.store, self.settings, self.codec, self.audit))
            except (AlprError, StoreError) as exc:  # broker, audit, holds or store unavailable: nothing
                log.error("retention.failed", error=str(exc)[:300])  # was purged; try again in 5 minutes
                self.next_at = datetime.now(timezone.utc) + timedelta(minutes=5)
                continue
            self.next_at = next_run(datetime.now(timezone.utc), self.settings.retention_run_at)
