"""A running proxy for the proxy test modules: broker users, an embedded store with a few
reads, alerts and a hold, and HTTP helpers that speak to it as clients do."""

from __future__ import annotations

import base64
import http.client
import json
import uuid
from urllib.parse import urlencode

from alpr.access.proxy import ProxyService
from alpr.core.migrations import migrate
from alpr.core.settings import load_settings
from alpr.core.store import EmbeddedStore
from alpr.schemas import Codec

from tests.people import PASSWORD, publish_user

CASE = {"SQL_case": "24-0107", "SQL_purpose": "stolen vehicle investigation"}

READS = (
    "INSERT INTO alpr.reads (read_id, camera_id, agency, plate, confidence, crop_jpeg, captured_at, read_at, lat, "
    "lon, model_version, frames_seen) VALUES "
    "('r1', 'cam-1', 'SPD', '7ABC123', 0.97, 'JPEG1', '2026-11-20 10:00:00', '2026-11-20 10:00:01', 38.5, -121.4, 'm', 1),"
    "('r2', 'cam-2', 'SPD', '7ABC123', 0.95, 'JPEG2', '2026-11-21 11:00:00', '2026-11-21 11:00:01', 38.6, -121.5, 'm', 1),"
    "('r3', 'cam-1', 'SPD', '8XYZ999', 0.91, 'JPEG3', '2026-11-21 12:00:00', '2026-11-21 12:00:01', 38.7, -121.6, 'm', 1)")
ALERTS = ("INSERT INTO alpr.alerts (alert_id, kind, agency, read_id, plate, camera_id, captured_at, lat, lon, "
          "match_key, reason, case_number, notices, raised_at) VALUES ('a1', 'EXACT', 'SPD', 'r1', '7ABC123', "
          "'cam-1', '2026-11-20 10:00:00', 38.5, -121.4, 'CA:7ABC123', 'stolen', '24-0107', [], '2026-11-20 10:00:02')")
HOLDS = ("INSERT INTO alpr.held_reads (read_id, hold_id, case_number) VALUES ('r2', 'h1', '24-0107')")


def start(broker, tmp_path_factory, roles: dict[str, str], **overrides):
    """Yield an env dict: settings, codec, store, proxy, names (role key -> unique user name)."""
    settings = load_settings(kafka_bootstrap=broker.bootstrap, data_dir=tmp_path_factory.mktemp("proxy"),
                             proxy_auth_cache_seconds=300, **overrides)
    codec = Codec()
    tag = uuid.uuid4().hex[:6]
    names = {k: f"{k}-{tag}" for k in roles}
    for key, role in roles.items():
        publish_user(settings, codec, names[key], role=role)
    store = EmbeddedStore(settings.data_dir / "clickhouse", settings.clickhouse_database)
    migrate(store, settings)
    for sql in (READS, ALERTS, HOLDS):
        store.command(sql)
    proxy = ProxyService(settings, store, codec, writer=f"proxy-test-{tag}", port=0).start()
    try:
        yield {"settings": settings, "codec": codec, "store": store, "proxy": proxy, "names": names}
    finally:
        proxy.stop()
        store.close()


class Http:
    """One keep-alive connection, sending as clickhouse-connect does (POST body, settings in the URL)."""

    def __init__(self, env, who: str, password: str = PASSWORD) -> None:
        self.port = env["proxy"].port
        self.auth = "Basic " + base64.b64encode(f"{env['names'].get(who, who)}:{password}".encode()).decode()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def post(self, sql: str | bytes, params: dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        body = sql.encode() if isinstance(sql, str) else sql
        for attempt in (1, 2):
            try:
                self.conn.request("POST", f"/?{urlencode(params or {})}", body=body,
                                  headers={"Authorization": self.auth, **(headers or {})})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.reconnect()
                return resp.status, data
            except (ConnectionError, http.client.HTTPException):
                if attempt == 2:
                    raise
                self.reconnect()
        raise AssertionError("unreachable")

    def reconnect(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def rows(self, sql: str, params: dict | None = None) -> list[dict]:
        status, body = self.post(sql + " FORMAT JSONEachRow", params)
        assert status == 200, body
        return [json.loads(line) for line in body.splitlines() if line]
