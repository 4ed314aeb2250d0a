"""Hostile input against a running proxy: the corpus in tests/hostile/, two analysts
interleaved across a limit breach, and refusals at the edges (size, depth, internal
errors). Every refusal must name its rule, be audited with it, and change nothing.

One proxy for the module with small forced limits (50 rows, 64 MiB, 2 s) so that
limit breaches are cheap; all corpus lines go over one keep-alive connection.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alpr.access.proxy import count_rows
from alpr.audit.trail import read_events

from tests import proxy_env
from tests.proxy_env import CASE, Http

HOSTILE = Path(__file__).parent / "hostile"
OTHER_CASE = {"SQL_case": "24-0999", "SQL_purpose": "hit and run follow-up"}
BREACH = "SELECT a.plate FROM reads AS a, reads AS b, reads AS c, reads AS d UNION ALL SELECT plate FROM reads"


def corpus() -> list[tuple[str, str, str, dict]]:
    """(where, rule, sql, url params) for every line of every group file."""
    out = []
    for path in sorted(HOSTILE.glob("*.txt")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            rule, sql, *rest = line.split("\t")
            if sql.startswith("json:"):
                sql = json.loads(sql[5:])
            out.append((f"{path.name}:{n}", rule, sql, json.loads(rest[0]) if rest and rest[0].strip() else {}))
    return out


@pytest.fixture(scope="module")
def env(broker, tmp_path_factory):
    yield from proxy_env.start(broker, tmp_path_factory, {"analyst": "ANALYST", "other": "ANALYST"},
                               proxy_max_result_rows=50, proxy_max_memory_bytes=64 << 20,
                               proxy_max_execution_seconds=2)


def audit_since(env, since: datetime) -> list:
    return [ev for _, ev in read_events(env["settings"], env["codec"]) if ev.occurred_at >= since]


def fingerprint(store) -> dict:
    """Row count and content hash of every table outside system, and the list of databases."""
    out = {"databases": [r["name"] for r in store.rows("SELECT name FROM system.databases ORDER BY name")]}
    for t in store.rows("SELECT database, name FROM system.tables WHERE database NOT IN "
                        "('system', 'INFORMATION_SCHEMA', 'information_schema') ORDER BY database, name"):
        name = f"`{t['database']}`.`{t['name']}`"
        out[name] = store.rows(f"SELECT count() AS n, sum(cityHash64(*)) AS h FROM {name}")
    return out


def written_files(env) -> list[Path]:
    roots = [Path("/tmp"), Path.cwd(), env["settings"].data_dir]
    return [p for root in roots for p in root.rglob("hostile_out*")] if roots else []


def test_corpus_is_large_and_grouped() -> None:
    lines = corpus()
    groups = {where.split(":")[0] for where, *_ in lines}
    assert len(lines) >= 300, len(lines)
    assert {"table_functions.txt", "system_tables.txt", "quoting_escaping.txt", "comments.txt",
            "multi_statement.txt", "settings_smuggling.txt", "functions.txt", "ddl_dml.txt",
            "resource_exhaustion.txt", "cross_user_state.txt"} <= groups


def test_every_hostile_query_is_refused_audited_and_without_effect(env) -> None:
    before, files_before = fingerprint(env["store"]), written_files(env)
    since = datetime.now(timezone.utc)
    client = Http(env, "analyst")
    run = uuid.uuid4().hex[:8]
    sent, problems = [], []
    for i, (where, rule, sql, params) in enumerate(corpus()):
        qid = f"hostile-{run}-{i}"
        status, body = client.post(sql, {**CASE, **params, "query_id": qid})
        if status == 200 or f"[rule {rule}]".encode() not in body or not body.startswith(b"Code: "):
            problems.append(f"{where}: HTTP {status} {body[:160]!r} (wanted {rule})")
        sent.append((where, rule, qid))
    events = {ev.details.get("query_id"): ev for ev in audit_since(env, since)}
    for where, rule, qid in sent:
        ev = events.get(qid)
        if ev is None:
            problems.append(f"{where}: no audit event")
        elif ev.outcome.value not in ("REFUSED", "FAILED") or ev.details.get("rule") != rule or not ev.reason:
            problems.append(f"{where}: audited {ev.outcome.value} rule={ev.details.get('rule')} (wanted {rule})")
        elif ev.actor != env["names"]["analyst"] and rule != "R-CREDENTIALS":  # that one names who it claims
            problems.append(f"{where}: audited as {ev.actor}")
    assert not problems, f"{len(problems)} of {len(sent)}:\n" + "\n".join(problems[:40])
    assert fingerprint(env["store"]) == before  # no table, row, dictionary or database changed
    assert written_files(env) == files_before == []  # no INTO OUTFILE / file() / BACKUP wrote anything


def _interleave(env, rounds: int, fmt: str, errors: list) -> None:
    a, b = Http(env, "analyst"), Http(env, "other")
    expected = None
    for _ in range(rounds):
        status, body = a.post(f"{BREACH} FORMAT {fmt}", CASE)
        if status != 500 or b"[rule R-LIMITS]" not in body or b"7ABC123" in body:
            errors.append(f"{fmt}: the breach answered {status} {body[:120]!r}")
        status, body = b.post(f"SELECT read_id, plate FROM reads WHERE plate = '8XYZ999' FORMAT {fmt}", OTHER_CASE)
        if status != 200 or count_rows(fmt, body) != 1 or b"7ABC123" in body:
            errors.append(f"{fmt}: the other analyst got {status}, {len(body)} bytes")
        expected = expected or body
        if body != expected:
            errors.append(f"{fmt}: the other analyst's answer changed between rounds")


def test_two_analysts_interleaved_never_see_each_others_rows(env) -> None:
    """A limit breach returns an error and nothing else, and leaves nothing for the next request."""
    since = datetime.now(timezone.utc)
    errors: list[str] = []
    for fmt in ("CSV", "JSONEachRow", "Arrow", "Native", "TabSeparated"):  # the formats that leaked
        _interleave(env, 3, fmt, errors)
    threads = [threading.Thread(target=_interleave, args=(env, 6, fmt, errors)) for fmt in ("CSV", "JSONEachRow")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:10]
    events = audit_since(env, since)
    mine = [e for e in events if e.actor == env["names"]["analyst"] and e.action == "QUERY"]
    theirs = [e for e in events if e.actor == env["names"]["other"] and e.action == "QUERY"]
    assert len(mine) == len(theirs) == 5 * 3 + 2 * 6
    assert all(e.outcome.value == "FAILED" and e.details["rule"] == "R-LIMITS" and e.rows is None for e in mine)
    assert all(e.outcome.value == "ALLOWED" and e.rows == 1 and e.case_number == "24-0999" for e in theirs)
    assert env["store"].rows("SELECT 1 AS x") == [{"x": 1}]  # the warehouse's own session is untouched


@pytest.mark.parametrize("body, rule, status", [
    (b"SELECT plate FROM reads WHERE plate = '" + b"x" * (2 << 20) + b"'", "R-SIZE", 413),
    (b"SELECT plate FROM reads WHERE plate = '" + b"x" * 200_000 + b"'", "R-SIZE", 400),
    (b"SELECT " + b"(" * 60 + b"1" + b")" * 60 + b" FROM reads", "R-DEPTH", 400),
    (b"SELECT plate FROM reads WHERE " + b"NOT " * 3000 + b"1", "R-DEPTH", 400),
    (b"SELECT plate FROM reads WHERE plate IN (" + b"[" * 40 + b"1" + b"]" * 40 + b")", "R-DEPTH", 400),
])
def test_oversized_and_too_deep_input_refused_with_a_rule_and_audited(env, body, rule, status) -> None:
    since = datetime.now(timezone.utc)
    qid = f"edge-{uuid.uuid4().hex[:8]}"
    got, answer = Http(env, "analyst").post(body, {**CASE, "query_id": qid})
    assert got == status and f"[rule {rule}]".encode() in answer and b"internal" not in answer, answer[:300]
    [ev] = [e for e in audit_since(env, since) if e.details.get("query_id") == qid]
    assert ev.outcome.value == "REFUSED" and ev.details["rule"] == rule and ev.actor == env["names"]["analyst"]
    assert len(ev.subject) <= 10_000 and ev.reason


def test_oversized_body_with_a_wrong_password_is_a_refused_login(env) -> None:
    since = datetime.now(timezone.utc)
    status, body = Http(env, "analyst", password="not the password").post(b"x" * (2 << 20), CASE)
    assert status == 401 and b"AUTHENTICATION_FAILED" in body
    assert [e for e in audit_since(env, since) if e.action == "LOGIN" and e.outcome.value == "REFUSED"
            and e.actor == env["names"]["analyst"]]


def test_chunked_and_compressed_bodies_refused_and_audited(env) -> None:
    since = datetime.now(timezone.utc)
    client = Http(env, "analyst")
    status, body = client.post(b"\x1f\x8b compressed", CASE, headers={"Content-Encoding": "gzip"})
    assert status == 400 and b"[rule R-SIZE]" in body
    client.conn.request("POST", "/?SQL_case=24-0107&SQL_purpose=stolen+vehicle", body=iter([b"SELECT plate ", b"FROM reads"]),
                        headers={"Authorization": client.auth}, encode_chunked=True)
    resp = client.conn.getresponse()
    assert resp.status == 413 and b"[rule R-SIZE]" in resp.read()
    refused = [e for e in audit_since(env, since) if e.actor == env["names"]["analyst"] and e.outcome.value == "REFUSED"]
    assert [e.details["rule"] for e in refused] == ["R-SIZE", "R-SIZE"]


def test_an_internal_error_is_audited_and_answered_with_an_incident_id(env, monkeypatch) -> None:
    import alpr.access.proxy as proxy_module

    def broken(fmt, data):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(proxy_module, "count_rows", broken)
    since = datetime.now(timezone.utc)
    status, body = Http(env, "analyst").post("SELECT plate FROM reads", CASE)
    assert status == 500 and b"incident" in body and b"7ABC123" not in body and b"simulated" not in body
    [ev] = [e for e in audit_since(env, since) if e.actor == env["names"]["analyst"]]
    assert ev.outcome.value == "FAILED" and ev.details["rule"] == "R-INTERNAL" and "incident" in ev.reason


def test_other_clickhouse_handlers_refused_after_login_and_audited(env) -> None:
    since = datetime.now(timezone.utc)
    client = Http(env, "analyst")
    for path in ("/play", "/replicas_status", "/dashboard"):
        client.conn.request("GET", path, headers={"Authorization": client.auth})
        resp = client.conn.getresponse()
        assert resp.status == 404 and b"[rule R-PATH]" in resp.read()
    refused = [e for e in audit_since(env, since) if e.actor == env["names"]["analyst"]]
    assert [e.details["rule"] for e in refused] == ["R-PATH"] * 3
    client.conn.request("GET", "/ping")
    assert client.conn.getresponse().read() == b"Ok.\n"  # the health probe needs no login


@pytest.mark.parametrize("setting", [{"max_result_rows": "0"}, {"readonly": "0"}, {"max_execution_time": "0"},
                                     {"use_query_cache": "1"}, {"allow_ddl": "1"}, {"max_memory_usage": "0"}])
def test_settings_a_client_library_sends_are_refused_by_the_proxy_and_audited(env, setting) -> None:
    """The connect answer reports settings as changeable, so clickhouse-connect sends them and the
    proxy refuses them with an audit event, instead of the client refusing where nobody sees it."""
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import DatabaseError

    from tests.people import PASSWORD

    since = datetime.now(timezone.utc)
    with pytest.raises(DatabaseError, match="R-SETTINGS"):
        clickhouse_connect.get_client(host="127.0.0.1", port=env["proxy"].port, username=env["names"]["analyst"],
                                      password=PASSWORD, settings={**CASE, **setting}).query("SELECT plate FROM reads")
    refused = [e for e in audit_since(env, since) if e.actor == env["names"]["analyst"] and e.outcome.value == "REFUSED"]
    assert refused and all(e.details["rule"] == "R-SETTINGS" for e in refused)
