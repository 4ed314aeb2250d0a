"""Generated queries, run for real: whatever the policy lets through must not return what the
role may not read. Plants marked values where an analyst may not look (the plate image, a hold's
case number, the audit trail, a file on disk), then builds a few thousand queries from pieces an
attacker combines (quoting, stars, EXCEPT, subqueries, CTEs, joins, catalog views, unions) and runs
every one the policy allows on the engine, as the proxy would."""

from __future__ import annotations

import random

from alpr.access.proxy import load_catalog
from alpr.access.sqlpolicy import Limits, PolicyRefused, decide
from alpr.core.store import StoreError
from alpr.schemas.models import UserRole

MARK = b"PLANTED"
COLS = ["plate", "read_id", "crop_jpeg", "CROP_JPEG", "`crop_jpeg`", '"crop_jpeg"', "`crop\\x5fjpeg`", "*",
        "* EXCEPT (crop_jpeg)", "* EXCEPT (CROP_JPEG)", "* EXCEPT (plate)", "s.*", "tuple(*)", "toString(crop_jpeg)",
        "(SELECT case_number FROM held_reads LIMIT 1)", "(SELECT any(case_number) FROM alpr.held_reads)",
        "create_table_query", "name", "table", "engine_full", "data_paths", "metadata_path", "type", "count()",
        "groupArray(plate)", "any(crop_jpeg)", "x", "s.x", "actor", "hold_id", "_part", "file('/tmp/x')"]
SOURCES = ["reads", "reads AS s", "alerts AS s", "system.tables AS s", "system.columns AS s", "system.databases",
           "(SELECT * FROM reads) AS s", "(SELECT * EXCEPT (crop_jpeg) FROM reads) AS s",
           "(SELECT crop_jpeg AS x FROM reads) AS s", "(SELECT plate AS x FROM reads) AS s", "holds", "held_reads",
           "audit_log", "reads AS s JOIN alerts AS a ON s.read_id = a.read_id", "x",
           "reads AS s ARRAY JOIN char_confidences AS x", "(SELECT create_table_query AS x FROM system.tables) AS s",
           "system.parts", "`system`.`tables`", "`alpr`.`reads`", "merge('alpr', '.*')"]
CTES = ["", "WITH x AS (SELECT * FROM reads) ", "WITH x AS (SELECT plate FROM reads) ",
        "WITH x AS (SELECT case_number FROM held_reads) ", "WITH x AS (SELECT * EXCEPT (CROP_JPEG) FROM reads) ",
        "WITH (SELECT crop_jpeg FROM reads LIMIT 1) AS x "]
# columns that exist in a source, so that a good share of the generated queries run
FITS = {"reads": {"plate", "read_id", "*", "* EXCEPT (crop_jpeg)", "* EXCEPT (CROP_JPEG)", "s.*", "count()",
                  "groupArray(plate)", "(SELECT case_number FROM held_reads LIMIT 1)", "x"},
        "alerts": {"plate", "read_id", "s.*", "count()", "*"},
        "system.tables": {"name", "create_table_query", "engine_full", "data_paths", "metadata_path", "s.*", "*"},
        "system.columns": {"name", "table", "type", "s.*", "*"}, "system.databases": {"name", "*", "metadata_path"},
        "(SELECT": {"s.*", "x", "s.x", "*", "count()"}, "x": {"x", "*", "plate"}}
WHERES = ["", " WHERE plate != ''", " WHERE x != ''", " WHERE read_id IN (SELECT read_id FROM held_reads)",
          " WHERE crop_jpeg LIKE 'P%'", " WHERE name = 'crop_jpeg'"]


def test_nothing_an_analyst_may_not_read_comes_back(store, settings) -> None:
    store.command("INSERT INTO alpr.reads (read_id, camera_id, agency, plate, confidence, crop_jpeg, captured_at, "
                  "read_at, lat, lon, model_version, frames_seen) VALUES ('r1', 'cam-1', 'SPD', '7ABC123', 0.97, "
                  "'PLANTED-IMAGE', '2026-11-20 10:00:00', '2026-11-20 10:00:01', 38.5, -121.4, 'm', 1)")
    store.command("INSERT INTO alpr.alerts (alert_id, kind, agency, read_id, plate, camera_id, captured_at, lat, lon, "
                  "match_key, reason, case_number, notices, raised_at) VALUES ('a1', 'EXACT', 'SPD', 'r1', "
                  "'7ABC123', 'cam-1', '2026-11-20 10:00:00', 38.5, -121.4, 'CA:7ABC123', 'stolen', '24-1', [], "
                  "'2026-11-20 10:00:02')")
    store.command("INSERT INTO alpr.held_reads VALUES ('r1', 'h1', 'PLANTED-HOLD')")
    store.command("INSERT INTO alpr.audit_log (event_id, chain, seq, occurred_at, actor, agency, action, outcome, "
                  "subject, details, prev_hash, hash) VALUES ('e', 'c', 1, now64(6), 'PLANTED-ACTOR', 'SPD', 'QUERY', "
                  "'ALLOWED', 's', map(), repeat('0', 64), repeat('0', 64))")
    catalog, limits = load_catalog(store), Limits(1000, 1 << 22, 5, 256 << 20)
    rng = random.Random(20261124)
    allowed, answered, leaks = 0, 0, []
    for _ in range(4000):
        source = rng.choice(SOURCES)
        fitting = [c for c in COLS if c in FITS.get(source.split(" AS ")[0].split(" ")[0], ())] or COLS
        cols = [rng.choice(fitting) if rng.random() < 0.7 else rng.choice(COLS) for _ in range(rng.randint(1, 3))]
        sql = rng.choice(CTES) + "SELECT " + ", ".join(dict.fromkeys(cols)) + " FROM " + source + rng.choice(WHERES)
        if rng.random() < 0.2:
            sql += f" UNION ALL SELECT {rng.choice(COLS)} FROM {rng.choice(SOURCES)}"
        try:
            decision = decide(sql, UserRole.ANALYST, "alpr", limits, "TSV", {}, catalog)
        except PolicyRefused:
            continue
        allowed += 1
        try:
            out = store.query_isolated(decision.sql, decision.fmt)
            answered += 1
        except StoreError:
            continue  # the engine refused it: nothing returned
        if MARK in out or b"crop_jpeg" in out or b"held_reads" in out:
            leaks.append((sql, out[:120]))
    assert answered > 70 and allowed > answered  # the generator reaches both outcomes
    assert not leaks, leaks[:5]
