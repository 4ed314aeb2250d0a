"""Proxy overhead against the store directly, and queries per second with the audit on.

Starts a dev broker, an embedded store with 100,000 reads and the proxy in this
process; times the cost of isolation (a one-row lookup on a fresh chDB connection,
as the proxy runs every query, against the shared session), then (a) a one-row
lookup and (b) a 100,000-row result, each straight through `Store.query_bytes` on
the shared session and through the proxy over HTTP (keep-alive, Native format,
what clickhouse-connect asks for), so the overhead includes isolation, parsing,
policy and the audit; then (c) one-row lookups from several client threads for a
few seconds. Every proxied query writes and waits for its
audit event. Usage: .venv/bin/python bench/proxy.py [--seconds 5] [--threads 4]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

from alpr.core import kafka
from alpr.ops.broker import DevBroker, free_port
from alpr.core.migrations import migrate
from alpr.access.proxy import ProxyService
from alpr.core.settings import load_settings
from alpr.access.sqlpolicy import Limits, decide
from alpr.core.store import EmbeddedStore
from alpr.core.topics import USERS, apply_topics
from alpr.access.users import hash_password, user_key
from alpr.schemas import Codec
from alpr.schemas.models import User, UserRole

PASSWORD = "bench password 1"
PARAMS = urlencode({"SQL_case": "BENCH-1", "SQL_purpose": "proxy overhead benchmark"})
ONE = "SELECT read_id, plate, captured_at FROM reads WHERE plate = 'P0000042' FORMAT Native"
MANY = "SELECT read_id, plate, captured_at, camera_id, confidence FROM reads FORMAT Native"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] * 1000


class Http:
    def __init__(self, port: int, user: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.auth = "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()

    def query(self, sql: str) -> bytes:
        self.conn.request("POST", f"/?{PARAMS}", body=sql.encode(), headers={"Authorization": self.auth})
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(body[:300])
        return body


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--n-one", type=int, default=300)
    ap.add_argument("--n-many", type=int, default=20)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    broker = DevBroker("127.0.0.1", free_port(), tmp / "broker.log").start()
    try:
        settings = load_settings(kafka_bootstrap=broker.bootstrap, data_dir=tmp / "data", proxy_port=0)
        apply_topics(kafka.admin(settings), replication_factor=1)
        codec = Codec()
        store = EmbeddedStore(settings.data_dir / "clickhouse", settings.clickhouse_database)
        migrate(store, settings)
        store.command("INSERT INTO alpr.reads (read_id, camera_id, agency, plate, confidence, captured_at, read_at, "
                      "lat, lon, model_version, frames_seen) SELECT concat('r', toString(number)), 'cam-1', 'SPD', "
                      "concat('P', leftPad(toString(number), 7, '0')), 0.9, now64(6) - number, now64(6) - number, "
                      "38.5, -121.4, 'm', 1 FROM numbers(100000)")
        now = datetime.now(timezone.utc)
        pub = kafka.Publisher(settings, codec, "bench")
        pub.publish(USERS, user_key("bench"), User(name="bench", role=UserRole.ANALYST, agency="SPD",
                                                   password_hash=hash_password(PASSWORD),
                                                   trained_at=now - timedelta(days=1), changed_by="bench",
                                                   changed_at=now))
        pub.flush()
        proxy = ProxyService(settings, store, codec, writer="bench-proxy").start()
        limits = Limits(settings.proxy_max_result_rows, settings.proxy_max_result_bytes,
                        settings.proxy_max_execution_seconds, settings.proxy_max_memory_bytes)
        one_direct = decide(ONE, UserRole.ANALYST, "alpr", limits).sql
        many_direct = decide(MANY, UserRole.ANALYST, "alpr", limits).sql
        client = Http(proxy.port, "bench")
        client.query(ONE)  # warm: password verified once, then cached
        print(f"# {datetime.now(timezone.utc):%Y-%m-%d}, {args}")
        iso = timed(lambda: store.query_isolated(one_direct, "Native"), args.n_one)
        shared = timed(lambda: store.query_bytes(one_direct, "Native"), args.n_one)
        print(f"{'isolation':<20} one-row lookup on its own connection p50 {pct(iso, 50):7.2f} ms vs the shared "
              f"session p50 {pct(shared, 50):7.2f} ms: {pct(iso, 50) - pct(shared, 50):+.2f} ms")
        for label, direct_sql, proxied_sql, n in (("one-row lookup", one_direct, ONE, args.n_one),
                                                   ("100,000-row result", many_direct, MANY, args.n_many)):
            d = timed(lambda: store.query_bytes(direct_sql, "Native"), n)
            p = timed(lambda: client.query(proxied_sql), n)
            print(f"{label:<20} direct p50 {pct(d, 50):7.2f} ms p99 {pct(d, 99):7.2f} ms | proxy p50 {pct(p, 50):7.2f} ms "
                  f"p99 {pct(p, 99):7.2f} ms | overhead p50 {pct(p, 50) - pct(d, 50):7.2f} ms "
                  f"p99 {pct(p, 99) - pct(d, 99):7.2f} ms")
        done, stop = [0] * args.threads, time.monotonic() + args.seconds

        def worker(i: int) -> None:
            c = Http(proxy.port, "bench")
            while time.monotonic() < stop:
                c.query(ONE)
                done[i] += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        print(f"sustained: {sum(done) / elapsed:.0f} queries/s one-row lookups, {args.threads} client threads, "
              f"audit on ({sum(done)} queries in {elapsed:.1f} s)")
        proxy.stop()
        store.close()
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
