"""The ClickHouse *server* path (ServerStore over clickhouse-connect), its HTTP requests recorded and replayed.

Production points ALPR_CLICKHOUSE_URL at a ClickHouse server; no server runs here.
tests/chserver.py records each HTTP request ServerStore sends and has chDB's
ClickHouse engine answer it (inserts parsed by ClickHouse's own input formats).
So the migrations, the sink's Arrow inserts into Enum columns, the holds applier,
and the settings clickhouse-connect sends are exercised as a server would receive
them; docs/clickhouse-server.md says what this does not prove.

With CLICKHOUSE_TEST_URL (and CLICKHOUSE_TEST_USER / CLICKHOUSE_TEST_PASSWORD) set, the
same tests run against that real server instead; those that inspect recorded requests skip.
"""

from __future__ import annotations

import base64
import os
from datetime import timedelta

import pyarrow as pa
import pytest

from alpr.core.migrations import migrate
from alpr.core.settings import load_settings
from alpr.core.store import ServerStore, StoreError
from alpr.warehouse import holds, sink
from tests import records
from tests.chserver import ChdbHttpServer

DB = "alpr"


REAL_SERVER = os.environ.get("CLICKHOUSE_TEST_URL")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if REAL_SERVER:
        yield None
        return
    with ChdbHttpServer(tmp_path_factory.mktemp("chserver")) as srv:
        yield srv


@pytest.fixture(scope="module")
def store(server, tmp_path_factory):
    url = REAL_SERVER or server.url
    user = os.environ.get("CLICKHOUSE_TEST_USER", "alpr") if REAL_SERVER else "alpr"
    password = os.environ.get("CLICKHOUSE_TEST_PASSWORD", "") if REAL_SERVER else "s3cret"
    settings = load_settings(clickhouse_url=url, clickhouse_user=user, clickhouse_password=password,
                             data_dir=tmp_path_factory.mktemp("data"))
    s = ServerStore(settings)
    assert migrate(s, settings)  # every DDL file, over HTTP
    yield s, settings
    s.close()


def _inserts(server, table: str) -> list:
    if server is None:
        pytest.skip("a real server: no recorded requests")
    return [r for r in server.requests if r.params.get("query", "").startswith(f"INSERT INTO {DB}.{table} ")]


def test_connect_and_migrations_authenticate_with_basic_auth_and_send_only_known_settings(server, store) -> None:
    if server is None:
        pytest.skip("a real server: no recorded requests")
    assert server.requests
    token = "Basic " + base64.b64encode(b"alpr:s3cret").decode()
    assert all(r.headers.get("Authorization") == token for r in server.requests)
    assert all("password" not in r.params and "user" not in r.params for r in server.requests)  # never in the URL
    assert [r.error for r in server.requests if r.status != 200] == []  # no UNKNOWN_SETTING, no failed DDL


def test_sink_inserts_arrow_into_enum_columns_as_a_server_parses_it(server, store) -> None:
    s, _ = store
    alert, read, audit = records.alert(), records.read(), records.audit()
    assert sink.write_new(s, DB, sink.ALERTS_SPEC, [alert]) == 1
    assert sink.write_new(s, DB, sink.READS_SPEC, [read]) == 1
    assert sink.write_new(s, DB, sink.AUDIT_SPEC, [audit]) == 1
    if server is not None:
        (insert,) = _inserts(server, "alerts")
        assert insert.method == "POST" and insert.params["query"].endswith(" FORMAT Arrow")
        assert insert.body[:6] == b"ARROW1"  # the Arrow IPC file format, as clickhouse-connect's insert_arrow sends
        assert "FROM INFILE" in insert.replayed_as
    (row,) = s.rows(f"SELECT kind, toTypeName(kind) AS type, read_id, notices FROM {DB}.alerts")
    assert row["kind"] == alert.kind.value and row["type"].startswith("Enum8(")
    assert row["read_id"] == read.read_id and row["notices"] == alert.notices
    (stored,) = s.rows(f"SELECT plate, captured_at, length(crop_jpeg) AS crop_bytes FROM {DB}.reads WHERE read_id = '{read.read_id}'")
    assert stored["plate"] == read.plate and stored["captured_at"].startswith("2026-11-22 12:00:00")
    assert stored["crop_bytes"] == len(read.crop_jpeg)
    # Idempotent: the same batch again inserts nothing (the sink's redelivery path).
    assert sink.write_new(s, DB, sink.ALERTS_SPEC, [alert]) == 0


def test_a_value_outside_the_enum_is_refused_by_clickhouse_not_stored(server, store) -> None:
    s, _ = store
    bad = sink.alerts_table([records.alert()]).set_column(1, "kind", pa.array(["BOGUS"]))
    bad = bad.set_column(0, "alert_id", pa.array(["a-bogus"]))
    with pytest.raises(StoreError, match="Unknown element 'BOGUS' for enum"):
        s.insert_arrow(f"{DB}.alerts", bad)
    assert s.scalar(f"SELECT count() FROM {DB}.alerts WHERE alert_id = 'a-bogus'") in (0, "0")


def test_holds_applier_writes_enum_status(server, store) -> None:
    s, settings = store
    hold = records.hold()
    applied = holds.apply(s, settings, [hold])
    assert applied.held_rows_added == len(hold.read_ids)
    (row,) = s.rows(f"SELECT status, toTypeName(status) AS type FROM {DB}.holds FINAL WHERE hold_id = '{hold.hold_id}'")
    assert row == {"status": "ACTIVE", "type": "Enum8('ACTIVE' = 1, 'RELEASED' = 2)"}
    released = type(hold).model_validate({**hold.model_dump(), "status": "RELEASED", "released_by": "sgt2",
                                          "released_at": records.NOW + timedelta(days=1),
                                          "release_reason": "case closed"})
    holds.apply(s, settings, [released])
    assert s.scalar(f"SELECT status FROM {DB}.holds FINAL WHERE hold_id = '{hold.hold_id}'") == "RELEASED"


def test_clickhouse_errors_reach_the_caller_as_store_errors(store) -> None:
    s, _ = store
    with pytest.raises(StoreError, match="UNKNOWN_TABLE|Unknown table|does not exist"):
        s.rows(f"SELECT * FROM {DB}.no_such_table")
