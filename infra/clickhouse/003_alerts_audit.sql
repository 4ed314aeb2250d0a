-- alerts: what the alert topology raised, for analysts and audits. Same retention as reads.
CREATE TABLE IF NOT EXISTS ${db}.alerts
(
    alert_id     String,
    kind         Enum8('EXACT' = 1, 'PARTIAL' = 2, 'POSSIBLE' = 3),
    agency       LowCardinality(String),
    read_id      String,
    plate        String,
    camera_id    LowCardinality(String),
    captured_at  DateTime64(6, 'UTC'),
    lat          Float64,
    lon          Float64,
    match_key    String,               -- STATE:PLATE of the hotlist entry, or the pattern id
    reason       String,               -- hotlist reason, or the partial's incident type
    case_number  String,
    notices      Array(String),
    raised_at    DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(raised_at)
ORDER BY (raised_at, alert_id)
TTL toDateTime(raised_at) + INTERVAL ${retention_days} DAY;

-- audit_log: a copy of the audit topic for reports. No TTL: the audit trail is
-- kept; the topic is the record of truth, this table is rebuilt from it if needed.
CREATE TABLE IF NOT EXISTS ${db}.audit_log
(
    event_id     String,
    chain        String,
    seq          UInt64,
    occurred_at  DateTime64(6, 'UTC'),
    actor        String,
    agency       LowCardinality(String),
    action       LowCardinality(String),
    outcome      LowCardinality(String),
    case_number  Nullable(String),
    purpose      Nullable(String),
    subject      String,
    reason       Nullable(String),
    rows         Nullable(Int64),
    details      Map(String, String),
    prev_hash    FixedString(64),
    hash         FixedString(64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (occurred_at, chain, seq);
