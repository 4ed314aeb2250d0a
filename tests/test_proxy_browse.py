"""Schema browsing through the proxy, as analysts' tools do it: clickhouse-connect, and the
metadata queries of DBeaver's ClickHouse JDBC driver and Grafana's ClickHouse source.

Each role sees the databases, tables and columns it may query, nothing else; browsing
needs no case number (it reads no ALPR data) and is audited like any query.
"""

from __future__ import annotations

from datetime import datetime, timezone

import clickhouse_connect
import pytest
from alpr.audit.trail import read_events
from clickhouse_connect.driver.exceptions import DatabaseError

from tests import proxy_env
from tests.people import PASSWORD
from tests.proxy_env import CASE

# Grafana's ClickHouse data source (pkg/plugin/schema.go): tables, then columns, then DESCRIBE.
GRAFANA_TABLES = "SELECT database, name FROM system.tables ORDER BY database, name"
GRAFANA_COLUMNS = ("SELECT database, table, name, type, comment FROM system.columns WHERE (database, table) IN "
                   "(('alpr', 'reads')) OR (database = currentDatabase() AND table IN ('alerts')) "
                   "ORDER BY database, table, position")
# The ClickHouse JDBC driver DBeaver uses (ClickHouseDatabaseMetaData.getTables / getColumns).
JDBC_TABLES = (
    "select null as TABLE_CAT, t.database as TABLE_SCHEM, t.name as TABLE_NAME, case when t.engine like '%Log' then "
    "'LOG TABLE' when t.engine in ('Buffer', 'Memory', 'Set') then 'MEMORY TABLE' when t.is_temporary != 0 then "
    "'TEMPORARY TABLE' when t.engine like '%View' then 'VIEW' when t.engine = 'Dictionary' then 'DICTIONARY' when "
    "t.engine like 'Async%' or t.engine like 'System%' then 'SYSTEM TABLE' when empty(t.data_paths) then "
    "'REMOTE TABLE' else 'TABLE' end as TABLE_TYPE, t.comment as REMARKS, null as TYPE_CAT, d.engine as TYPE_SCHEM, "
    "t.engine as TYPE_NAME, null as SELF_REFERENCING_COL_NAME, null as REF_GENERATION\n"
    "from system.tables t inner join system.databases d on t.database = d.name\n"
    "where t.database like 'alpr' and t.name like '%' and TABLE_TYPE in ('TABLE','VIEW','SYSTEM TABLE') "
    "order by t.database, t.name")
JDBC_COLUMNS = (
    "select null as TABLE_CAT, database as TABLE_SCHEM, table as TABLE_NAME, name as COLUMN_NAME, toInt32(1111) as "
    "DATA_TYPE, type as TYPE_NAME, toInt32(0) as COLUMN_SIZE, 0 as BUFFER_LENGTH, cast(null as Nullable(Int32)) as "
    "DECIMAL_DIGITS, 10 as NUM_PREC_RADIX, toInt32(position(type, 'Nullable(') >= 1 ? 1 : 0) as NULLABLE, comment "
    "as REMARKS, default_expression as COLUMN_DEF, 0 as SQL_DATA_TYPE, 0 as SQL_DATETIME_SUB, cast(null as "
    "Nullable(Int32)) as CHAR_OCTET_LENGTH, position as ORDINAL_POSITION, position(type, 'Nullable(') >= 1 ? 'YES' "
    ": 'NO' as IS_NULLABLE, null as SCOPE_CATALOG, null as SCOPE_SCHEMA, null as SCOPE_TABLE, null as "
    "SOURCE_DATA_TYPE, 'NO' as IS_AUTOINCREMENT, 'NO' as IS_GENERATEDCOLUMN from system.columns\n"
    "where database like '%' and table like '%' and name like '%'")
JDBC_SCHEMAS = "select name from system.databases order by name"


@pytest.fixture(scope="module")
def env(broker, tmp_path_factory):
    yield from proxy_env.start(broker, tmp_path_factory, {"analyst": "ANALYST", "supervisor": "SUPERVISOR",
                                                          "auditor": "AUDITOR", "admin": "ADMINISTRATOR"})


def client(env, who: str = "analyst", **settings):
    return clickhouse_connect.get_client(host="127.0.0.1", port=env["proxy"].port, username=env["names"][who],
                                         password=PASSWORD, settings=settings or None)


def columns(env, who: str, table: str) -> list[str]:
    return [r[0] for r in client(env, who).query(f"DESCRIBE TABLE {table}").result_rows]


def test_show_and_describe_answer_what_the_role_may_query(env) -> None:
    c = client(env)  # no case number: browsing reads no ALPR data
    assert c.query("SHOW DATABASES").result_rows == [("alpr",)]
    assert c.query("SHOW TABLES").result_rows == [("alerts",), ("reads",)]
    assert c.query("SHOW TABLES FROM alpr LIKE 're%'").result_rows == [("reads",)]
    described = c.query("DESCRIBE TABLE alpr.reads")
    assert described.column_names[:2] == ("name", "type")
    names = [r[0] for r in described.result_rows]
    assert "read_at" in names and "captured_at" in names and "plate" in names
    assert "crop_jpeg" not in names  # withheld from analysts, so not shown either
    assert {r[0]: r[1] for r in described.result_rows}["read_at"] == "DateTime64(6, 'UTC')"
    assert "crop_jpeg" in columns(env, "supervisor", "reads")
    assert client(env, "auditor").query("SHOW TABLES").result_rows == [("audit_log",)]
    assert client(env, "admin").query("SHOW TABLES").result_rows == []
    with pytest.raises(DatabaseError, match="R-TABLES"):
        c.query("DESCRIBE TABLE holds")
    with pytest.raises(DatabaseError, match="R-TABLES"):
        client(env, "auditor").query("DESCRIBE TABLE reads")


def test_grafana_metadata_queries(env) -> None:
    c = client(env)
    assert c.query(GRAFANA_TABLES).result_rows == [("alpr", "alerts"), ("alpr", "reads")]
    assert c.query("SELECT currentDatabase()").result_rows == [("alpr",)]
    rows = c.query(GRAFANA_COLUMNS).result_rows
    assert {(r[0], r[1]) for r in rows} == {("alpr", "reads"), ("alpr", "alerts")}
    assert ("alpr", "reads", "read_at", "DateTime64(6, 'UTC')", "") in rows
    assert not [r for r in rows if r[2] == "crop_jpeg"]
    assert [r[0] for r in c.query('DESCRIBE TABLE "alpr"."reads"').result_rows][:2] == ["read_id", "frame_id"]


def test_dbeaver_jdbc_metadata_queries(env) -> None:
    c = client(env)
    assert c.query(JDBC_SCHEMAS).result_rows == [("alpr",)]
    tables = c.query(JDBC_TABLES).result_rows
    assert [(r[1], r[2], r[3]) for r in tables] == [("alpr", "alerts", "TABLE"), ("alpr", "reads", "TABLE")]
    cols = c.query(JDBC_COLUMNS).result_rows
    assert {r[2] for r in cols} == {"reads", "alerts"}
    assert "crop_jpeg" not in {r[3] for r in cols} and "read_at" in {r[3] for r in cols}
    sup = {r[3] for r in client(env, "supervisor").query(JDBC_COLUMNS).result_rows}
    assert "crop_jpeg" in sup


def test_catalog_views_hide_server_internals(env) -> None:
    c = client(env)
    t = c.query("SELECT * FROM system.tables WHERE name = 'reads'")
    row = dict(zip(t.column_names, t.result_rows[0]))
    assert row["engine"] == "ReplacingMergeTree" and row["sorting_key"]
    assert row["create_table_query"] == "" and row["metadata_path"] == ""  # TTL, dictionary and paths not shown
    assert row["data_paths"] == ["(not shown)"]
    d = c.query("SELECT * FROM system.databases")
    assert [dict(zip(d.column_names, r))["data_path"] for r in d.result_rows] == [""]
    every = {r[0] for r in c.query("SELECT DISTINCT table FROM system.columns").result_rows}
    assert every == {"reads", "alerts"}  # not holds, held_reads, audit_log, schema_migrations, system.*


def test_browsing_is_audited_and_mixing_it_with_data_needs_a_case(env) -> None:
    since = datetime.now(timezone.utc)
    client(env).query("SHOW TABLES")
    events = [ev for _, ev in read_events(env["settings"], env["codec"])
              if ev.occurred_at >= since and ev.actor == env["names"]["analyst"] and ev.action == "QUERY"]
    [show] = [e for e in events if e.subject.startswith("SHOW TABLES")]
    assert show.outcome.value == "ALLOWED" and show.details["kind"] == "browse" and show.rows == 2
    assert show.details["tables"] == "system.tables" and show.case_number is None
    with pytest.raises(DatabaseError, match="R-CASE"):
        client(env).query("SELECT r.plate FROM reads AS r JOIN system.tables AS t ON t.name = r.plate")
    assert client(env, **CASE).query(
        "SELECT count() FROM reads AS r JOIN system.tables AS t ON t.name = r.plate").result_rows == [(0,)]


def test_reference_matches_what_the_proxy_describes(env) -> None:
    """docs/analyst-tables.md lists exactly the columns, in order and with types, that DESCRIBE answers."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "analyst-tables.md").read_text()
    for table, who in (("reads", "supervisor"), ("alerts", "analyst"), ("audit_log", "auditor")):
        section = doc.split(f"## {table}:")[1].split("\n## ")[0]
        listed = re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", section, flags=re.MULTILINE)
        described = [(r[0], r[1]) for r in client(env, who).query(f"DESCRIBE TABLE {table}").result_rows]
        assert listed == described, table
