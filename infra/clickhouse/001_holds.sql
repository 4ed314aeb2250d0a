-- Evidence holds. Applied by `alpr` migrations to chDB (embedded) and to a ClickHouse
-- server alike; ${db} and ${retention_days} come from settings.
--
-- holds: one row per version of a hold (placed, then maybe released); the newest
-- version wins (ReplacingMergeTree on `version`, read with FINAL).
CREATE TABLE IF NOT EXISTS ${db}.holds
(
    hold_id        String,
    case_number    String,
    reason         String,
    agency         LowCardinality(String),
    plate          Nullable(String),
    range_from     Nullable(DateTime64(6, 'UTC')),
    range_to       Nullable(DateTime64(6, 'UTC')),
    placed_by      String,
    placed_at      DateTime64(6, 'UTC'),
    status         Enum8('ACTIVE' = 1, 'RELEASED' = 2),
    released_by    Nullable(String),
    released_at    Nullable(DateTime64(6, 'UTC')),
    release_reason Nullable(String),
    version        DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY hold_id;

-- held_reads: the read ids an active hold covers. The reads TTL asks this table
-- (through the dictionary below) before it deletes a row, so a held read survives
-- past retention. Releasing a hold deletes its rows here.
CREATE TABLE IF NOT EXISTS ${db}.held_reads
(
    read_id     String,
    hold_id     String,
    case_number String
)
ENGINE = ReplacingMergeTree
ORDER BY (read_id, hold_id);

-- The dictionary is what a TTL expression may consult. LIFETIME bounds how stale
-- it can be; retention enforcement reloads it explicitly before purging.
CREATE DICTIONARY IF NOT EXISTS ${db}.held_reads_dict
(
    read_id String,
    hold_id String
)
PRIMARY KEY read_id
SOURCE(CLICKHOUSE(DB '${db}' TABLE 'held_reads'))
LAYOUT(COMPLEX_KEY_HASHED())
LIFETIME(MIN 30 MAX 60);
