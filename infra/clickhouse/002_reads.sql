-- reads: every plate read, kept ${retention_days} days from when the camera saw it.
--
-- PARTITION BY month: a purge drops or rewrites whole months, and time-bounded
--   queries skip months they do not touch.
-- ORDER BY (plate, captured_at, read_id): the primary index serves exact-plate and
--   plate-prefix lookups directly; read_id last makes the key unique per read.
-- ReplacingMergeTree(ingested_at): a read redelivered by Kafka has the same
--   read_id and sorting key, so merges fold duplicates; the sink also skips ids
--   it has already inserted, so queries do not wait for a merge.
-- plate_ngram: a 3-gram bloom filter for substring / wildcard plate searches
--   (LIKE '%AB12%', the partial-plate patterns).
-- TTL ... DELETE WHERE NOT dictHas(...): rows older than retention go at merge
--   time unless held as evidence. Merges are lazy, so `alpr retention enforce`
--   also deletes explicitly; the TTL is the safety net.
CREATE TABLE IF NOT EXISTS ${db}.reads
(
    read_id          String,
    frame_id         Nullable(String),
    camera_id        LowCardinality(String),
    agency           LowCardinality(String),
    plate            String,
    plate_state      LowCardinality(Nullable(String)),
    confidence       Float32,
    char_confidences Array(Float32),
    box              Array(Int32),
    crop_jpeg        String CODEC(NONE),          -- JPEG does not compress further
    captured_at      DateTime64(6, 'UTC'),
    read_at          DateTime64(6, 'UTC'),
    lat              Float64,
    lon              Float64,
    heading_deg      Nullable(Float32),
    model_version    LowCardinality(String),
    frames_seen      UInt16,
    ingested_at      DateTime64(6, 'UTC') DEFAULT now64(6),
    INDEX plate_ngram plate TYPE ngrambf_v1(3, 65536, 3, 0) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(captured_at)
ORDER BY (plate, captured_at, read_id)
TTL toDateTime(captured_at) + INTERVAL ${retention_days} DAY
    DELETE WHERE NOT dictHas('${db}.held_reads_dict', tuple(read_id));
