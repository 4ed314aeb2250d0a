"""The gated SQL proxy, driven by clickhouse-connect (the analysts' client) and raw HTTP.

One proxy per module (argon2 and the users-topic load make a start cost seconds),
in-process over an embedded store with a few reads; users are published on the
shared `alpr.users` topic under unique names.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from alpr.audit.trail import AuditLog, read_events
from alpr.ops.broker import free_port
from alpr.core.migrations import migrate
from alpr.access.proxy import ProxyService, count_rows
from alpr.core.settings import load_settings
from alpr.access.sqlpolicy import Limits, PolicyRefused, check_case, decide
from alpr.core.store import EmbeddedStore
from alpr.access.users import UserDirectory
from alpr.schemas import Codec
from alpr.schemas.models import UserRole
from tests.people import PASSWORD, publish_user

CASE = {"SQL_case": "24-0107", "SQL_purpose": "stolen vehicle investigation"}
NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def env(broker, tmp_path_factory):
    settings = load_settings(kafka_bootstrap=broker.bootstrap, data_dir=tmp_path_factory.mktemp("proxy"),
                             proxy_auth_cache_seconds=300, login_max_failures=3)
    codec = Codec()
    tag = uuid.uuid4().hex[:6]
    names = {k: f"{k}-{tag}" for k in ("analyst", "supervisor", "auditor", "untrained", "expired", "disabled",
                                       "locked", "locked2")}
    publish_user(settings, codec, names["analyst"])
    publish_user(settings, codec, names["supervisor"], role="SUPERVISOR")
    publish_user(settings, codec, names["auditor"], role="AUDITOR")
    publish_user(settings, codec, names["untrained"], trained_days_ago=None)
    publish_user(settings, codec, names["expired"], trained_days_ago=settings.training_valid_days + 1)
    publish_user(settings, codec, names["disabled"], disabled=True)
    publish_user(settings, codec, names["locked"])
    publish_user(settings, codec, names["locked2"])
    store = EmbeddedStore(settings.data_dir / "clickhouse", settings.clickhouse_database)
    migrate(store, settings)
    store.command(
        "INSERT INTO alpr.reads (read_id, camera_id, agency, plate, confidence, crop_jpeg, captured_at, read_at, lat, lon, "
        "model_version, frames_seen) VALUES "
        "('r1', 'cam-1', 'SPD', '7ABC123', 0.97, 'JPEG1', '2026-11-20 10:00:00', '2026-11-20 10:00:01', 38.5, -121.4, 'm', 1),"
        "('r2', 'cam-2', 'SPD', '7ABC123', 0.95, 'JPEG2', '2026-11-21 11:00:00', '2026-11-21 11:00:01', 38.6, -121.5, 'm', 1),"
        "('r3', 'cam-1', 'SPD', '8XYZ999', 0.91, 'JPEG3', '2026-11-21 12:00:00', '2026-11-21 12:00:01', 38.7, -121.6, 'm', 1)")
    proxy = ProxyService(settings, store, codec, writer=f"proxy-test-{tag}", port=0).start()
    yield {"settings": settings, "codec": codec, "store": store, "proxy": proxy, "names": names}
    proxy.stop()
    store.close()


def client(env, who: str = "analyst", password: str = PASSWORD, **settings):
    return clickhouse_connect.get_client(host="127.0.0.1", port=env["proxy"].port, username=env["names"].get(who, who),
                                         password=password, settings=settings or None)


def post(env, sql: str, params: dict | None = None, who: str = "analyst", password: str = PASSWORD,
         headers: dict | None = None) -> tuple[int, bytes]:
    from urllib.parse import urlencode

    url = f"{env['proxy'].url}/?{urlencode(params or {})}"
    req = urllib.request.Request(url, data=sql.encode(), method="POST", headers=headers or {})
    if who is not None:
        token = base64.b64encode(f"{env['names'].get(who, who)}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def audit_events(env, since: datetime) -> list:
    return [ev for _, ev in read_events(env["settings"], env["codec"]) if ev.occurred_at >= since]


# --- the policy alone (no I/O)

LIMITS = Limits(1000, 1 << 20, 10)


@pytest.mark.parametrize("sql, rule", [
    ("INSERT INTO reads (plate) VALUES ('X')", "R-READONLY"),
    ("DROP TABLE reads", "R-READONLY"),
    ("ALTER TABLE reads DELETE WHERE 1", "R-READONLY"),
    ("SYSTEM RELOAD DICTIONARIES", "R-READONLY"),
    ("SELECT plate FROM reads; DROP TABLE reads", "R-ONE"),
    ("SELECT plate FROM reads /* x */ ; DROP TABLE reads", "R-ONE"),
    ("SELECT * FROM url('http://example.com/x.csv', CSV, 'a String')", "R-TABLEFUNC"),
    ("SELECT * FROM file('/etc/passwd', LineAsString)", "R-TABLEFUNC"),
    ("SELECT * FROM remote('10.0.0.1', alpr.reads)", "R-TABLEFUNC"),
    ("SELECT * FROM s3('https://b/x')", "R-TABLEFUNC"),
    ("SELECT * FROM input('a String')", "R-TABLEFUNC"),
    ("SELECT * FROM Python(x)", "R-TABLEFUNC"),
    ("SELECT * FROM system.users", "R-SYSTEM"),
    ("SELECT * FROM `system`.`parts`", "R-SYSTEM"),
    ("SELECT plate FROM reads r JOIN system.numbers n ON 1", "R-SYSTEM"),
    ("SELECT * FROM information_schema.tables", "R-SYSTEM"),
    ("SELECT * FROM holds", "R-TABLES"),
    ("SELECT read_id FROM held_reads", "R-TABLES"),
    ("SELECT * FROM audit_log", "R-TABLES"),
    ("SELECT plate FROM other.reads", "R-TABLES"),
    ("SELECT plate FROM reads WHERE read_id IN held_reads", "R-TABLES"),
    ("SELECT plate FROM (SELECT * FROM VALUES('plate String', 'X'))", "R-TABLES"),
    ("SELECT dictGet('alpr.held_reads_dict', 'hold_id', tuple(read_id)) FROM reads", "R-FUNCTIONS"),
    ("SELECT plate, dictHas('alpr.held_reads_dict', tuple(read_id)) FROM reads", "R-FUNCTIONS"),
    ("SELECT COLUMNS('.*') FROM reads", "R-FUNCTIONS"),
    ("SELECT plate FROM reads WHERE sleepEachRow(3) = 0", "R-FUNCTIONS"),
    ("SELECT crop_jpeg FROM reads", "R-COLUMNS"),
    ('SELECT "crop_jpeg" FROM reads', "R-COLUMNS"),
    ("SELECT `crop_jpeg` FROM reads", "R-COLUMNS"),
    ("SELECT * FROM reads", "R-COLUMNS"),
    ("SELECT r.* FROM reads AS r", "R-COLUMNS"),
    ("SELECT tuple(*) FROM reads", "R-COLUMNS"),
    ("SELECT plate FROM reads SETTINGS max_result_rows = 0", "R-SETTINGS"),
    ("SELECT plate FROM reads SETTINGS readonly = 0", "R-SETTINGS"),
    ("SELECT plate FROM reads FORMAT Pretty", "R-FORMAT"),
    ("SELECT 2 + 2", "R-TABLES"),
    ("SELEC plate FROM reads", "R-PARSE"),
])
def test_policy_refuses_naming_the_rule(sql, rule) -> None:
    with pytest.raises(PolicyRefused) as err:
        decide(sql, UserRole.ANALYST, "alpr", LIMITS)
    assert err.value.rule == rule, str(err.value)
    assert f"[rule {rule}]" in str(err.value)


def test_policy_runs_only_the_checked_tree_with_forced_limits() -> None:
    # a line comment would swallow anything appended to the original text; the rendered tree has none
    d = decide("SELECT plate FROM reads -- comment\n", UserRole.ANALYST, "alpr", LIMITS)
    assert d.sql.startswith("SELECT * FROM (SELECT plate FROM alpr.reads) SETTINGS readonly = 1, max_result_rows = 1000")
    assert "comment" not in d.sql and "max_execution_time = 10" in d.sql
    assert decide("SELECT * EXCEPT (crop_jpeg) FROM reads", UserRole.ANALYST, "alpr", LIMITS).tables == ("reads",)
    assert decide("SELECT count(*) FROM reads", UserRole.ANALYST, "alpr", LIMITS).fmt == "TabSeparated"
    assert decide("SELECT crop_jpeg FROM reads", UserRole.SUPERVISOR, "alpr", LIMITS).tables == ("reads",)
    with pytest.raises(PolicyRefused, match="may not read table reads"):
        decide("SELECT plate FROM reads", UserRole.AUDITOR, "alpr", LIMITS)
    with pytest.raises(PolicyRefused, match="may not read table"):
        decide("SELECT plate FROM reads", UserRole.ADMINISTRATOR, "alpr", LIMITS)


@pytest.mark.parametrize("case, purpose, ok", [
    (None, None, False), ("24-1", None, False), (None, "a purpose here", False), ("24-1", "why", False),
    ("none", "short reason", False), ("none", "patrol pattern analysis for burglary series", True),
    ("24-0107", "stolen vehicle", True), ("24 1; DROP", "stolen vehicle", False),
])
def test_case_and_purpose_rule(case, purpose, ok) -> None:
    if ok:
        assert check_case(case, purpose)[0] in (case, "none")
    else:
        with pytest.raises(PolicyRefused, match="R-CASE"):
            check_case(case, purpose)


def test_count_rows_per_format() -> None:
    assert count_rows("TabSeparated", b"a\t1\nb\t2\n") == 2
    assert count_rows("TabSeparatedWithNamesAndTypes", b"x\ny\na\n") == 1
    assert count_rows("CSVWithNames", b'x\n"multi\nline"\n') == 1
    assert count_rows("JSONEachRow", b"") == 0
    assert count_rows("JSON", b'{"meta": [], "data": [], "rows": 7}') == 7


# --- through the proxy

def test_allowed_query_returns_the_right_rows_and_is_audited(env) -> None:
    since = datetime.now(timezone.utc)
    c = client(env, **CASE)
    result = c.query("SELECT read_id, plate, camera_id FROM reads WHERE plate = {p:String} ORDER BY read_id",
                     parameters={"p": "7ABC123"})
    assert result.result_rows == [("r1", "7ABC123", "cam-1"), ("r2", "7ABC123", "cam-2")]
    events = audit_events(env, since)
    name = env["names"]["analyst"]
    logins = [e for e in events if e.actor == name and e.action == "LOGIN" and e.outcome.value == "ALLOWED"]
    assert logins, "the client's connection checks are audited as logins"
    q = [e for e in events if e.actor == name and e.action == "QUERY" and e.details.get("param_p") == "7ABC123"]
    assert len(q) == 1
    ev = q[0]
    assert ev.outcome.value == "ALLOWED" and ev.rows == 2 and ev.case_number == "24-0107"
    assert ev.purpose == "stolen vehicle investigation" and ev.occurred_at >= since
    assert ev.details["tables"] == "reads" and ev.details["client"] == "127.0.0.1"


def test_query_without_case_or_purpose_refused(env) -> None:
    since = datetime.now(timezone.utc)
    with pytest.raises(DatabaseError, match="R-CASE"):
        client(env).query("SELECT plate FROM reads")
    with pytest.raises(DatabaseError, match="R-CASE"):
        client(env, SQL_case="24-0107").query("SELECT plate FROM reads")
    with pytest.raises(DatabaseError, match="R-CASE"):
        client(env, SQL_case="none", SQL_purpose="just looking").query("SELECT plate FROM reads")
    ok = client(env, SQL_case="none", SQL_purpose="burglary series pattern analysis, district 4")
    assert len(ok.query("SELECT plate FROM reads").result_rows) == 3
    refused = [e for e in audit_events(env, since) if e.actor == env["names"]["analyst"]
               and e.action == "QUERY" and e.outcome.value == "REFUSED"]
    assert len(refused) == 3 and all(e.details["rule"] == "R-CASE" for e in refused)


@pytest.mark.parametrize("who, reason", [
    ("untrained", "no completed ALPR training"),
    ("expired", "refresher is due"),
    ("disabled", "disabled"),
    ("nobody-here", "user name or password is wrong"),
])
def test_users_who_may_not_reach_data_are_refused(env, who, reason) -> None:
    since = datetime.now(timezone.utc)
    with pytest.raises(DatabaseError, match=reason):
        client(env, who, **CASE).query("SELECT plate FROM reads")
    name = env["names"].get(who, who)
    refused = [e for e in audit_events(env, since) if e.action == "LOGIN" and e.outcome.value == "REFUSED"
               and name in e.actor]
    assert refused and reason in refused[0].reason


def test_repeated_failures_lock_the_account_in_every_proxy(env) -> None:
    name = env["names"]["locked"]
    for _ in range(3):
        status, body = post(env, "SELECT plate FROM reads", CASE, who="locked", password="wrong password!!")
        assert status == 401 and b"AUTHENTICATION_FAILED" in body
    status, body = post(env, "SELECT plate FROM reads", CASE, who="locked")
    assert status == 401 and b"locked" in body, body  # the right password no longer opens it
    # a second proxy process sees the lock through the users topic
    other = UserDirectory(env["settings"], env["codec"]).load()
    lock = other.lockout(name)
    assert lock is not None and lock.failures >= 3 and lock.locked_until > datetime.now(timezone.utc)


def test_lock_placed_by_one_proxy_holds_in_another_running_one(env) -> None:
    name = env["names"]["locked2"]
    second = ProxyService(env["settings"], env["store"], env["codec"], writer="proxy-test-second", port=0).start()
    try:
        assert post(env, "SELECT plate FROM reads", CASE, who="locked2")[0] == 200  # the password works
        for _ in range(3):
            post(env, "SELECT plate FROM reads", CASE, who="locked2", password="wrong password!!")
        assert second.directory.wait_until(
            lambda d: (d.lockout(name) is not None and d.lockout(name).locked_until is not None), timeout=10)
        env2 = {**env, "proxy": second}
        status, body = post(env2, "SELECT plate FROM reads", CASE, who="locked2")
        assert status == 401 and b"locked" in body
    finally:
        second.stop()


@pytest.mark.parametrize("sql, rule", [
    ("INSERT INTO reads (read_id, plate) VALUES ('x', 'X')", "R-READONLY"),
    ("DROP TABLE reads", "R-READONLY"),
    ("ALTER TABLE reads DELETE WHERE 1", "R-READONLY"),
    ("SELECT plate FROM reads; DROP TABLE reads", "R-ONE"),
    ("SELECT plate FROM reads -- */ ; DROP TABLE reads\n; SELECT 1", "R-ONE"),
    ("SELECT * FROM url('http://127.0.0.1:1/x', CSV, 'a String')", "R-TABLEFUNC"),
    ("SELECT * FROM system.users", "R-SYSTEM"),
    ("SELECT name FROM `system`.\"parts\"", "R-SYSTEM"),
    ("SELECT \"crop_jpeg\" FROM reads", "R-COLUMNS"),
    ("SELECT plate FROM reads SETTINGS max_result_rows = 0", "R-SETTINGS"),
])
def test_forbidden_sql_refused_through_the_proxy_and_audited(env, sql, rule) -> None:
    since = datetime.now(timezone.utc)
    status, body = post(env, sql, CASE)
    assert status in (400, 403), body
    assert body.startswith(b"Code: ") and b"DB::Exception" in body and rule.encode() in body
    events = [e for e in audit_events(env, since) if e.actor == env["names"]["analyst"] and e.subject == sql]
    assert len(events) == 1 and events[0].outcome.value == "REFUSED" and events[0].details["rule"] == rule
    assert env["store"].scalar("SELECT count() FROM alpr.reads") == 3  # nothing changed


def test_role_column_rules_through_the_proxy(env) -> None:
    with pytest.raises(DatabaseError, match="R-COLUMNS"):
        client(env, **CASE).query("SELECT * FROM reads")
    rows = client(env, **CASE).query("SELECT * EXCEPT (crop_jpeg) FROM reads").result_rows
    assert len(rows) == 3
    sup = client(env, "supervisor", **CASE).query("SELECT crop_jpeg FROM reads ORDER BY read_id").result_rows
    assert [r[0] for r in sup] == [b"JPEG1", b"JPEG2", b"JPEG3"] or [r[0] for r in sup] == ["JPEG1", "JPEG2", "JPEG3"]
    with pytest.raises(DatabaseError, match="may not read table reads"):
        client(env, "auditor", **CASE).query("SELECT plate FROM reads")


def test_password_in_url_refused(env) -> None:
    from urllib.parse import urlencode

    url = f"{env['proxy'].url}/?" + urlencode({"user": env["names"]["analyst"], "password": PASSWORD, **CASE})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(url, data=b"SELECT plate FROM reads"), timeout=10)
    assert err.value.code == 401 and b"credentials in the URL" in err.value.read()


def test_formats_and_headers(env) -> None:
    status, body = post(env, "SELECT plate FROM reads ORDER BY read_id FORMAT JSONEachRow", CASE,
                        headers={"X-ClickHouse-User": env["names"]["analyst"], "X-ClickHouse-Key": PASSWORD}, who=None)
    assert status == 200 and [json.loads(x)["plate"] for x in body.splitlines()] == ["7ABC123", "7ABC123", "8XYZ999"]
    status, body = post(env, "SELECT plate FROM reads ORDER BY read_id", {**CASE, "default_format": "CSV"})
    assert status == 200 and body == b'"7ABC123"\n"7ABC123"\n"8XYZ999"\n'
    status, body = post(env, "SELECT plate FROM reads ORDER BY read_id", CASE)  # ClickHouse's default: TSV
    assert status == 200 and body == b"7ABC123\n7ABC123\n8XYZ999\n"


def test_forced_row_limit(env) -> None:
    small = env["settings"].model_copy(update={"proxy_max_result_rows": 2})
    svc = ProxyService(small, env["store"], env["codec"], audit=env["proxy"].audit, directory=env["proxy"].directory,
                       port=0).start()
    try:
        status, body = post({**env, "proxy": svc}, "SELECT plate FROM reads", CASE)
        assert status == 500 and b"Code: 396" in body  # TOO_MANY_ROWS_OR_BYTES from ClickHouse itself
        assert post({**env, "proxy": svc}, "SELECT plate FROM reads LIMIT 2", CASE)[0] == 200
    finally:
        svc.stop()


def test_audit_broker_down_means_no_data(env) -> None:
    down = env["settings"].model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    dead_audit = AuditLog(down, env["codec"], "proxy-dead", ack_timeout=1.0)
    svc = ProxyService(env["settings"], env["store"], env["codec"], audit=dead_audit,
                       directory=env["proxy"].directory, port=0).start()
    try:
        t0 = time.monotonic()
        status, body = post({**env, "proxy": svc}, "SELECT plate FROM reads", CASE)
        assert status == 503 and b"audit trail unavailable" in body
        assert b"7ABC123" not in body and time.monotonic() - t0 < 15
        with pytest.raises(DatabaseError, match="audit"):
            clickhouse_connect.get_client(host="127.0.0.1", port=svc.port, username=env["names"]["analyst"],
                                          password=PASSWORD, settings=CASE)
    finally:
        svc.stop()


def test_not_loopback_without_tls_refused(env) -> None:
    from alpr.core.errors import ConfigError

    exposed = env["settings"].model_copy(update={"bind_host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="TLS"):
        ProxyService(exposed, env["store"], env["codec"], port=0)


def test_except_names_are_matched_as_clickhouse_matches_them(env) -> None:
    """ClickHouse ignores an EXCEPT name that matches no column: `* EXCEPT (CROP_JPEG)` kept the image."""
    status, body = post(env, "SELECT * EXCEPT (CROP_JPEG) FROM reads", CASE)
    assert status == 403 and b"R-COLUMNS" in body and b"JPEG1" not in body
    status, body = post(env, "SELECT * EXCEPT (crop_jpeg) FROM reads ORDER BY read_id", CASE)
    assert status == 200 and b"7ABC123" in body and b"JPEG1" not in body
