-- reads, alerts: the background TTL becomes a far safety net that never runs ahead of the
-- audited, hold-aware purge (`alpr retention enforce`, run daily by `alpr warehouse`).
--
-- Why: 002 expired a read `retention_days` after it was captured. A partner's historical
--   read older than that was expired the moment it was inserted, and ClickHouse deleted it
--   within seconds: before any hold (by read id or plate + time range) could be applied to
--   it, and with no PURGE audit event. Deletion belongs to one step that consults every hold
--   rule and writes the audit event first; the TTL only catches what that step missed.
-- greatest(captured_at, ingested_at): the TTL clock starts no earlier than the moment the
--   row reached this store (ingested_at defaults to now64() at insert), so nothing is ever
--   expired at insert, however old its capture time.
-- + retention + 30 days: the scheduled purge runs daily and deletes at retention, so the
--   TTL can only act on a row that purge has left alone for a month (warehouse down, or a
--   held row: the dictionary check below spares held read ids). `alpr warehouse` rewrites
--   the margin to `retention_ttl_margin_days` at start (alpr.warehouse.retention.ensure_ttl).
-- alerts: raised_at is already the arrival time of an alert; the same margin applies.
-- materialize_ttl_after_modify = 0: no rewrite of every part now; parts pick it up as they merge.
ALTER TABLE ${db}.reads
    MODIFY TTL toDateTime(greatest(captured_at, ingested_at)) + INTERVAL ${retention_days} DAY + INTERVAL 30 DAY
        DELETE WHERE NOT dictHas('${db}.held_reads_dict', tuple(read_id))
    SETTINGS materialize_ttl_after_modify = 0;

ALTER TABLE ${db}.alerts
    MODIFY TTL toDateTime(raised_at) + INTERVAL ${retention_days} DAY + INTERVAL 30 DAY
        DELETE WHERE NOT dictHas('${db}.held_reads_dict', tuple(read_id))
    SETTINGS materialize_ttl_after_modify = 0;
