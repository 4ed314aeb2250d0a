"""Retention: reads (and their alerts) older than `retention_days` are purged unless held.

Both agency policies keep ALPR data at least one year (Government Code 34090.6) and
purge it after that, unless it is held as evidence. One step deletes: `enforce`
(`alpr retention enforce`, and daily inside `alpr warehouse`). It first applies every
hold on the `alpr.holds` topic (re-expanding plate ranges) and reloads the holds
dictionary, counts what goes and what is kept, writes the PURGE audit event with
those counts, then runs `ALTER TABLE ... DELETE` and waits for it. Its predicate
carries every hold rule itself: held read ids (the dictionary) and each active
plate + time-range hold as a clause, so a read that arrives in a held range between
the hold sync and the delete is still spared. If holds or the audit trail cannot be
read or written, nothing is purged (fail closed).

The table TTL (030_ttl_safety_net.sql) is only a safety net that cannot run ahead of
`enforce`: it counts from when a row reached the store (never expired at insert, so
historical imports wait for a hold or the audited purge) plus retention plus
`retention_ttl_margin_days`, and it spares held read ids.

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
from alpr.core.sql import lit, ts_lit
from alpr.core.store import Store, StoreError
from alpr.schemas import Codec, EvidenceHold
from alpr.schemas.models import HoldStatus

log = get_log(__name__)
PURGE = "PURGE"
SYSTEM_ACTOR = "system:retention"


def held_sql(db: str, active: list[EvidenceHold]) -> str:
    """A boolean over a reads/alerts row: true when any hold rule covers it (read ids, plate + range)."""
    rules = [f"dictHas('{db}.held_reads_dict', tuple(read_id))"]
    for h in sorted(active, key=lambda h: h.hold_id):
        if h.plate is not None and h.range_from is not None and h.range_to is not None:
            rules.append(f"(plate = {lit(h.plate)} AND captured_at BETWEEN {ts_lit(h.range_from)} "
                         f"AND {ts_lit(h.range_to)})")
    return "(" + " OR ".join(rules) + ")"


def _predicate(cutoff: datetime, held: str, keep: bool) -> str:
    return f"captured_at < {ts_lit(cutoff)} AND {'' if keep else 'NOT '}{held}"


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
    on_topic = holds.current(settings, codec)
    applied = holds.apply(store, settings, on_topic.values())  # every hold in the dictionary before counting
    holds.reload_dictionary(store, settings)
    held = held_sql(db, [h for h in on_topic.values() if h.status == HoldStatus.ACTIVE])
    cutoff = as_of - timedelta(days=settings.retention_days)
    purge, keep = _predicate(cutoff, held, keep=False), _predicate(cutoff, held, keep=True)
    purged = int(store.scalar(f"SELECT count() FROM {db}.reads FINAL WHERE {purge}"))
    held_kept = int(store.scalar(f"SELECT count() FROM {db}.reads FINAL WHERE {keep}"))
    alert_purge = purge
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


def ttl_sql(settings: Settings, table: str) -> str:
    """The safety-net TTL of `reads` or `alerts` (030_ttl_safety_net.sql explains each clause)."""
    start = "greatest(captured_at, ingested_at)" if table == "reads" else "raised_at"
    days = settings.retention_days + settings.retention_ttl_margin_days
    return (f"toDateTime({start}) + toIntervalDay({days}) "
            f"DELETE WHERE NOT dictHas('{settings.clickhouse_database}.held_reads_dict', tuple(read_id))")


def ensure_ttl(store: Store, settings: Settings) -> bool:
    """Make the reads/alerts TTL match `retention_days` + `retention_ttl_margin_days`.

    Returns True if it changed anything. `materialize_ttl_after_modify = 0`: changing the
    TTL must not start a rewrite of every part; `enforce` does the purging.
    """
    db = settings.clickhouse_database
    changed = False
    for table in ("reads", "alerts"):
        ddl = store.scalar(f"SELECT create_table_query FROM system.tables WHERE database = '{db}' "
                           f"AND name = '{table}'") or ""
        want = ttl_sql(settings, table)
        if want.split(" DELETE")[0] in ddl:
            continue
        store.command(f"ALTER TABLE {db}.{table} MODIFY TTL {want} SETTINGS materialize_ttl_after_modify = 0")
        log.info("retention.ttl_changed", table=table, days=settings.retention_days,
                 margin_days=settings.retention_ttl_margin_days)
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
