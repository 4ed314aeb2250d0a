-- alerts: the background TTL spares alerts whose read is held as evidence, as the
-- reads TTL does (003 deleted every alert a retention period after it was raised,
-- held or not). `alpr retention enforce` purges alerts by the same rule.
-- materialize_ttl_after_modify = 0: changing the rule must not rewrite every part
-- now; it applies as parts merge, and enforce does the purging that is due.
ALTER TABLE ${db}.alerts
    MODIFY TTL toDateTime(raised_at) + INTERVAL ${retention_days} DAY
        DELETE WHERE NOT dictHas('${db}.held_reads_dict', tuple(read_id))
    SETTINGS materialize_ttl_after_modify = 0;
