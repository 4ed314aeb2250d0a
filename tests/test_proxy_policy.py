"""The proxy's policy alone (no HTTP): the function allow-list checked against the engine's own
catalogue, the queries analysts write that must pass, and names that must never resolve."""

from __future__ import annotations

import pytest
from alpr.access.sqlpolicy import (
    ALLOWED_FUNCTIONS,
    CASE_INSENSITIVE,
    PARSER_DATE_FORMS,
    ROLE_FUNCTIONS,
    Limits,
    PolicyRefused,
    decide,
    function_allowed,
)
from alpr.schemas.models import UserRole

LIMITS = Limits(1000, 1 << 20, 10)


def test_allow_list_matches_the_engines_functions_and_their_case_rules(store) -> None:
    """Every allowed name is a function this ClickHouse knows by that exact spelling, and names
    are matched case-insensitively exactly where ClickHouse registers them so."""
    known = {r["name"]: r for r in store.rows("SELECT name, case_insensitive FROM system.functions")}
    every = ALLOWED_FUNCTIONS.union(*ROLE_FUNCTIONS.values())
    missing = sorted(n for n in every if n not in known)
    assert not missing, f"not functions of this engine: {missing}"
    assert {n for n in every if known[n]["case_insensitive"]} == set(CASE_INSENSITIVE)
    assert CASE_INSENSITIVE <= ALLOWED_FUNCTIONS
    assert all(function_allowed(form) for form in PARSER_DATE_FORMS)  # DATE_ADD(DAY, 1, ts): parser syntax


@pytest.mark.parametrize("name, ok", [
    ("lower", True), ("LOWER", True), ("Lower", True),  # registered case-insensitively
    ("toString", True), ("TOSTRING", False), ("tostring", False),  # case-sensitive: only the canonical spelling
    ("count", True), ("COUNT", True), ("countIf", True), ("COUNTIf", True), ("uniqExactIf", True),
    ("sumIfOrNull", True), ("countDistinct", True), ("countState", False), ("sumMerge", False),
    ("dictGet", False), ("dictGetIf", False), ("fileIf", False), ("DICTGET", False), ("file", False),
    ("FILE", False), ("getSetting", False), ("sleep", False), ("sleepEachRow", False), ("version", False),
    ("VERSION", False), ("hostName", False), ("currentUser", False), ("joinGet", False), ("url", False),
    ("filesystemAvailable", False), ("getClientHTTPHeader", False), ("range", False), ("repeat", False),
    ("arrayReduce", False), ("generateUUIDv4", False), ("rand", False), ("throwIf", False),
])
def test_function_names_decided_as_clickhouse_resolves_them(name, ok) -> None:
    assert function_allowed(name) is ok


@pytest.mark.parametrize("sql", [
    "SELECT plate, captured_at, camera_id FROM reads WHERE plate = '7ABC123' ORDER BY captured_at DESC LIMIT 50",
    "SELECT plate FROM reads WHERE plate LIKE '7AB%' AND captured_at >= now() - INTERVAL 30 DAY",
    "SELECT plate FROM reads WHERE match(plate, '^7AB.12') AND lower(camera_id) = 'cam-1'",
    "SELECT toStartOfHour(captured_at) AS h, count() AS n FROM reads GROUP BY h ORDER BY h",
    ("SELECT camera_id, uniqExact(plate), countIf(confidence > 0.9), quantile(0.5)(confidence) FROM reads "
    "GROUP BY camera_id"),
    "SELECT plate, geoDistance(lon, lat, -121.49, 38.58) AS metres FROM reads WHERE metres < 5000",
    "SELECT plate, greatCircleDistance(lon, lat, -121.49, 38.58) FROM reads",
    "SELECT plate, levenshteinDistance(plate, '7ABC12') AS d FROM reads WHERE d <= 1",
    "SELECT r.plate, a.reason FROM reads AS r JOIN alerts AS a ON r.read_id = a.read_id",
    ("WITH recent AS (SELECT plate, captured_at FROM reads WHERE captured_at > now() - INTERVAL 1 DAY) "
    "SELECT plate, count() FROM recent GROUP BY plate"),
    "SELECT plate, row_number() OVER (PARTITION BY plate ORDER BY captured_at) FROM reads",
    "SELECT plate, dateDiff('minute', captured_at, read_at), formatDateTime(captured_at, '%F %T') FROM reads",
    ("SELECT plate, if(confidence > 0.9, 'high', 'low'), multiIf(confidence > 0.9, 'a', confidence > 0.5, 'b', 'c') "
    "FROM reads"),
    "SELECT plate, toDate(captured_at), toYYYYMM(captured_at), toDayOfWeek(captured_at) FROM reads",
    "SELECT plate, arrayMap(x -> round(x, 2), char_confidences) FROM reads",
    "SELECT plate, CAST(confidence AS String), confidence::Float64 FROM reads",
    "SELECT plate FROM reads WHERE plate IN (SELECT plate FROM alerts WHERE kind = 'EXACT')",
    "SELECT count(*) FROM reads",
    "SELECT * EXCEPT (crop_jpeg) FROM reads",
    "SELECT plate FROM reads UNION ALL SELECT plate FROM alerts",
    "SELECT `plate`, \"camera_id\" FROM `reads`",
    "SELECT plate FROM reads -- a note\n",
    "SELECT concat(plate, '-', camera_id), substring(plate, 1, 3), upper(plate), length(plate) FROM reads",
])
def test_queries_analysts_write_pass(sql) -> None:
    d = decide(sql, UserRole.ANALYST, "alpr", LIMITS)
    assert d.sql.startswith("SELECT * FROM (") and "max_result_rows = 1000" in d.sql and "--" not in d.sql


def test_what_runs_is_the_normalised_tree() -> None:
    d = decide("SELECT `lower`(plate), \"upper\"(camera_id) FROM `re\\x61ds`", UserRole.ANALYST, "alpr", LIMITS)
    assert d.sql.startswith('SELECT * FROM (SELECT lower(plate), upper(camera_id) FROM alpr."reads")')
    # a UNION's limits cover the whole result, not only its last SELECT
    d = decide("SELECT plate FROM reads UNION ALL SELECT 'x'", UserRole.ANALYST, "alpr", LIMITS)
    assert d.sql.startswith("SELECT * FROM (SELECT plate FROM alpr.reads UNION ALL SELECT 'x') SETTINGS")
    assert "use_query_cache = 0" in d.sql and "max_memory_usage" in d.sql


@pytest.mark.parametrize("sql, rule", [
    ("SELECT plate FROM reads INTO OUTFILE '/tmp/x'", "R-READONLY"),
    ("KILL QUERY WHERE 1", "R-READONLY"),
    ("SELECT " + "(" * 50 + "1" + ")" * 50 + " FROM reads", "R-DEPTH"),
    ("SELECT plate FROM reads WHERE " + "NOT " * 3000 + "1", "R-DEPTH"),
    ("SELECT plate FROM reads WHERE plate = '" + "x" * 100_001 + "'", "R-SIZE"),
    ("SELECT plate, `f\\u0069le`('x') FROM reads", "R-NAMES"),
])
def test_refusals_say_what_was_refused(sql, rule) -> None:
    with pytest.raises(PolicyRefused) as err:
        decide(sql, UserRole.ANALYST, "alpr", LIMITS)
    assert err.value.rule == rule and "Kill" not in str(err.value) and "does not parse" not in str(err.value)


def test_url_parameters_are_allow_listed() -> None:
    ok = {"query_id": "q", "session_id": "s", "wait_end_of_query": "1", "send_progress_in_http_headers": "1",
          "date_time_input_format": "best_effort", "SQL_case": "1", "SQL_purpose": "x", "param_p": "v",
          "database": "alpr", "default_format": "Native"}
    decide("SELECT plate FROM reads", UserRole.ANALYST, "alpr", LIMITS, None, ok)
    for key in ("max_result_rows", "readonly", "max_execution_time", "use_query_cache", "sql_case", "profile"):
        with pytest.raises(PolicyRefused, match="R-SETTINGS"):
            decide("SELECT plate FROM reads", UserRole.ANALYST, "alpr", LIMITS, None, {**ok, key: "0"})


@pytest.mark.parametrize("rendered, rule", [
    ("SELECT plate, file ('/etc/passwd') FROM alpr.reads", "R-FUNCTIONS"),  # FILE is a keyword token in sqlglot
    ("SELECT plate, \"dictGet\"('d', 'a', 1) FROM alpr.reads", "R-FUNCTIONS"),
    ("SELECT plate, JSONExtractRaw(plate, 'a') FROM alpr.reads", "R-FUNCTIONS"),
    ("SELECT plate FROM alpr.reads; DROP TABLE alpr.reads", "R-ONE"),
    ("SELECT plate FROM alpr.reads SETTINGS readonly = 0", "R-SETTINGS"),
    ("SELECT plate FROM alpr.reads INTO OUTFILE 'x'", "R-SETTINGS"),
])
def test_the_rendered_text_is_checked_as_the_engine_reads_it(rendered, rule) -> None:
    """Defence against the two parsers disagreeing: the text that runs is scanned too."""
    from alpr.access.sqlpolicy import _check_rendered

    with pytest.raises(PolicyRefused) as err:
        _check_rendered(rendered)
    assert err.value.rule == rule
    _check_rendered("SELECT lower(plate), CAST(x AS Nullable(Int32)), quantile(0.5)(c), format('{}', plate), "
                    "count(*) FROM alpr.reads WHERE plate IN ('a') AND EXISTS (SELECT 1 FROM alpr.alerts)")


def test_operators_sqlglot_renders_as_calls_are_checked_and_unreadable_trees_refused() -> None:
    with pytest.raises(PolicyRefused, match="R-FUNCTIONS"):  # `->` renders as JSONExtractRaw(...)
        decide("SELECT plate->'$.a' FROM reads", UserRole.ANALYST, "alpr", LIMITS)
    with pytest.raises(PolicyRefused, match="R-PARSE"):  # a placeholder where a table name goes
        decide("SELECT * FROM reads, x?y(1)", UserRole.ANALYST, "alpr", LIMITS)
    with pytest.raises(PolicyRefused, match="R-COLUMNS"):
        decide("SELECT _part, plate FROM reads", UserRole.SUPERVISOR, "alpr", LIMITS)


def test_functions_are_allowed_per_role() -> None:
    sql = "SELECT actor, mapKeys(details) FROM audit_log WHERE details['rule'] = 'R-COLUMNS'"
    assert decide(sql, UserRole.AUDITOR, "alpr", LIMITS).tables == ("audit_log",)
    with pytest.raises(PolicyRefused, match="R-FUNCTIONS"):
        decide("SELECT plate, mapKeys(map('a', plate)) FROM reads", UserRole.ANALYST, "alpr", LIMITS)
