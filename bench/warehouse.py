"""Warehouse benchmark: plate-lookup latency over 10 million reads, disk per read, sink throughput.

1. Generates N synthetic reads spread over 13 months inside ClickHouse
   (INSERT ... SELECT FROM numbers(); not through Kafka), ~1 M distinct 7-character
   plates, no images (crop_jpeg empty), with background TTL merges stopped so the
   oldest month is not purged while measuring.
2. Times exact-plate, substring (`%AB12%`) and wildcard (`7AB?12*` as `LIKE '7AB_12%'`,
   and as a regex) lookups on the schema as migrated (no skip index on plate, 020).
3. Reports disk bytes per read (active parts, without images).
4. Puts back the ngram index that 020 dropped, times the same lookups with it, drops it.
5. Publishes M reads to a fresh dev broker and times the sink (consume, duplicate
   check against the 10 M-row table, insert, commit) from the first batch to the last.
   The reads sink takes its fast path (alpr.warehouse.fastreads: ClickHouse decodes the
   Avro); `--sink-batch-rows` sets the batch (default: the setting, 20,000).
6. Holds 100 reads of the oldest month and times `retention.enforce` over the table.

    python bench/warehouse.py [--rows 10000000] [--sink-reads 200000] [--sink-batch-rows N] [--runs 7] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402

from alpr.core import kafka  # noqa: E402
from alpr.warehouse import retention, sink  # noqa: E402
from alpr.audit.trail import AuditLog  # noqa: E402
from alpr.ops.broker import DevBroker, free_port  # noqa: E402
from alpr.core.migrations import migrate  # noqa: E402
from alpr.core.settings import load_settings  # noqa: E402
from alpr.core.store import EmbeddedStore  # noqa: E402
from alpr.core.topics import READS, apply_topics  # noqa: E402
from alpr.schemas import Codec, GeoPosition, PlateRead  # noqa: E402

# A plate per vehicle: digit, three letters, three digits; ~1 M vehicles seen ~10 times each.
PLATE = ("concat(toString(h % 10), char(65 + intDiv(h, 10) % 26), char(65 + intDiv(h, 260) % 26), "
         "char(65 + intDiv(h, 6760) % 26), leftPad(toString(intDiv(h, 175760) % 1000), 3, '0'))")
GENERATE = f"""
INSERT INTO alpr.reads (read_id, frame_id, camera_id, agency, plate, plate_state, confidence, char_confidences,
                        box, crop_jpeg, captured_at, read_at, lat, lon, heading_deg, model_version, frames_seen)
SELECT toString(generateUUIDv4(number)), NULL, concat('cam-', toString(number % 400)),
       ['SPD', 'SDPD', 'RIC'][1 + number % 3], {PLATE}, 'CA', 0.8 + (number % 20) / 100,
       arrayMap(i -> toFloat32(0.9 + (i % 10) / 100), range(7)), [10, 20, 110, 50], '',
       t, t + toIntervalMillisecond(300), 32.5 + (number % 10000) / 1000, -124.0 + (number % 9000) / 1000,
       toFloat32(number % 360), 'bench-1', toUInt16(1 + number % 4)
FROM (SELECT number, cityHash64(number % 1000000) AS h,
             toDateTime64(now64(6) - toIntervalSecond(number * 34128000 / {{rows}}), 6, 'UTC') AS t
      FROM numbers({{rows}}))
"""


def timed(store, sql: str, runs: int) -> tuple[float, int]:
    """Median wall ms over `runs` (after one warm-up run) and the row count returned."""
    n = len(store.rows(sql))
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        store.query_bytes(sql, "Native")
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--sink-reads", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--sink-batch-rows", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-warehouse-"))
    port = free_port()
    broker = DevBroker("127.0.0.1", port, work / "broker.log").start()
    extra = {"sink_batch_rows": args.sink_batch_rows} if args.sink_batch_rows else {}
    settings = load_settings(kafka_bootstrap=broker.bootstrap, data_dir=work, broker_port=port, **extra)
    store = EmbeddedStore(work / "clickhouse", "alpr")
    out: dict = {"rows": args.rows}
    try:
        migrate(store, settings)
        store.command("SYSTEM STOP TTL MERGES alpr.reads")  # 13 months > retention: keep the oldest month
        t0 = time.perf_counter()
        store.command(GENERATE.format(rows=args.rows))
        out["generate_s"] = round(time.perf_counter() - t0, 1)
        print(f"generated {args.rows} reads in {out['generate_s']} s", flush=True)

        plate = store.scalar("SELECT plate FROM alpr.reads LIMIT 1 OFFSET 4242")
        queries = {
            "exact": f"SELECT read_id, captured_at, camera_id FROM alpr.reads WHERE plate = '{plate}'",
            "substring %AB12%": "SELECT read_id, plate, captured_at FROM alpr.reads WHERE plate LIKE '%AB12%'",
            "wildcard 7AB?12*": "SELECT read_id, plate, captured_at FROM alpr.reads WHERE plate LIKE '7AB_12%'",
            "wildcard as regex": "SELECT read_id, plate, captured_at FROM alpr.reads WHERE match(plate, '^7AB.12')",
        }
        out["queries"] = {}
        for name, sql in queries.items():  # the schema as migrated: no skip index on plate (020)
            ms, n = timed(store, sql, args.runs)
            out["queries"][name] = {"rows": n, "ms": round(ms, 1)}
            print(f"{name:<20} {n:>6} rows  {ms:7.1f} ms", flush=True)
        parts = store.rows("SELECT sum(rows) AS rows, sum(bytes_on_disk) AS bytes, count() AS parts "
                           "FROM system.parts WHERE database = 'alpr' AND table = 'reads' AND active")[0]
        out["bytes_per_read"] = round(int(parts["bytes"]) / int(parts["rows"]), 1)
        out["parts"] = int(parts["parts"])
        print(f"disk: {out['bytes_per_read']} bytes per read without images, {out['parts']} parts", flush=True)

        # For the record: the ngram index that 002 created and 020 dropped, put back and measured.
        t0 = time.perf_counter()
        store.command("ALTER TABLE alpr.reads ADD INDEX plate_ngram plate TYPE ngrambf_v1(3, 65536, 3, 0) GRANULARITY 1")
        store.command("ALTER TABLE alpr.reads MATERIALIZE INDEX plate_ngram SETTINGS mutations_sync = 2")
        print(f"ngram index re-added for comparison in {time.perf_counter() - t0:.1f} s", flush=True)
        for name, sql in queries.items():
            ms, n = timed(store, sql, args.runs)
            out["queries"][name]["ms_with_ngram_index"] = round(ms, 1)
            print(f"{name:<20} {n:>6} rows  {ms:7.1f} ms with the ngram index", flush=True)
        idx = store.scalar("SELECT sum(secondary_indices_compressed_bytes) FROM system.parts "
                           "WHERE database = 'alpr' AND table = 'reads' AND active")
        out["ngram_index_bytes_per_read"] = round(int(idx) / args.rows, 1)
        print(f"the ngram index would add {out['ngram_index_bytes_per_read']} bytes per read", flush=True)
        store.command("ALTER TABLE alpr.reads DROP INDEX plate_ngram")  # back to the schema as migrated

        codec = Codec()
        apply_topics(kafka.admin(settings), replication_factor=1)
        pub = kafka.Publisher(settings, codec, "bench")
        now = datetime.now(timezone.utc)
        pos = GeoPosition(lat=32.7, lon=-117.1, heading_deg=90.0)
        for i in range(args.sink_reads):
            r = PlateRead(read_id=f"bench-{i}", frame_id=f"f{i}", camera_id=f"cam-{i % 50}", agency="SPD",
                          plate=f"{i % 10}ZZ{i % 997:03d}{i % 7}", plate_state="CA", confidence=0.93,
                          char_confidences=[0.97] * 8, box=[10, 20, 110, 50], captured_at=now - timedelta(seconds=i),
                          read_at=now, position=pos, model_version="bench-1")
            pub.publish(READS, r.plate, r)
        pub.flush(120)
        loop = sink.table_loop(settings, codec, store, sink.READS_SPEC, kafka.Publisher(settings, codec, "dl"),
                               "bench-sink")
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        thread.start()
        while loop.consumed == 0:
            time.sleep(0.01)
        t0, first = time.perf_counter(), loop.consumed  # group join (a few seconds on the dev broker) excluded
        while loop.consumed < args.sink_reads:
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        stop.set()
        thread.join(30)
        out["sink_rows_per_s"] = round((args.sink_reads - first) / elapsed)
        out["sink_batch_rows"] = settings.sink_batch_rows
        out["sink_fast_path_rows"] = getattr(loop.write, "fast_rows", 0)  # reads ClickHouse decoded
        stored = int(store.scalar("SELECT count() FROM alpr.reads WHERE read_id LIKE 'bench-%'"))
        assert stored == args.sink_reads, f"{stored} of {args.sink_reads} reads stored"
        print(f"sink: {args.sink_reads - first} reads in {elapsed:.1f} s = {out['sink_rows_per_s']} rows/s "
              f"(batches of up to {settings.sink_batch_rows}, into the {args.rows}-row table)", flush=True)

        # Retention over the 10 M reads: the oldest ~month is past 365 days; 100 of its reads are held.
        old = [r["read_id"] for r in store.rows(
            "SELECT read_id FROM alpr.reads WHERE captured_at < now64(6) - INTERVAL 366 DAY LIMIT 100")]
        store.insert_arrow("alpr.held_reads", pa.table({"read_id": old, "hold_id": ["bench"] * len(old),
                                                         "case_number": ["BENCH"] * len(old)}))
        t0 = time.perf_counter()
        counts = retention.enforce(store, settings, codec, AuditLog(settings, codec, "bench"))
        out["retention"] = {**{k: counts[k] for k in ("purged", "held_kept")}, "s": round(time.perf_counter() - t0, 1)}
        print(f"retention enforce: purged {counts['purged']}, kept {counts['held_kept']} held, "
              f"in {out['retention']['s']} s (counts, audit event, ALTER ... DELETE with mutations_sync=2)", flush=True)
    finally:
        store.close()
        broker.stop()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
