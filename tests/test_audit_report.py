"""`alpr audit verify` fails on a tampered chain; `alpr audit report` shows what an auditor asks for."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from alpr.core import kafka
from alpr.audit.trail import AuditLog, read_events
from alpr.audit.report import ACTIONS, build_report, period, render_text
from alpr.core.topics import AUDIT
from alpr.schemas import AuditEvent
from tests.conftest import make_topic
from tests.people import PASSWORD, publish_user


@pytest.fixture
def cli_env(settings, monkeypatch):
    from alpr.core.settings import settings as cached

    monkeypatch.setenv("ALPR_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    cached.cache_clear()
    yield
    cached.cache_clear()


def _alpr(args, stdin: str = ""):
    from alpr.cli import cli

    return CliRunner().invoke(cli, args, input=stdin, catch_exceptions=False)


def _write_period_events(settings, codec, actor: str) -> None:
    audit = AuditLog(settings, codec, f"report-{actor}")
    audit.record(actor=actor, agency="SPD", action="QUERY", outcome="ALLOWED", case_number="24-9", purpose="robbery",
                 subject="SELECT plate FROM reads", rows=4)
    audit.record(actor=actor, agency="SPD", action="QUERY", outcome="ALLOWED", case_number="none",
                 purpose="burglary series pattern analysis", subject="SELECT count() FROM reads", rows=1)
    audit.record(actor=actor, agency="SPD", action="QUERY", outcome="REFUSED", case_number="24-9", purpose="robbery",
                 subject="DROP TABLE reads", reason="only SELECT [rule R-READONLY]", details={"rule": "R-READONLY"})
    audit.record(actor=actor, agency="SPD", action="LOGIN", outcome="REFUSED",
                 reason="no completed ALPR training is on record")
    audit.record(actor=actor, agency="SPD", action="RELEASE_EXPORT", outcome="DONE", subject="rq-1", rows=2)
    audit.record(actor=f"system:{actor}", agency="SPD", action="HOLD_ADD", outcome="DONE", subject="h-1")
    audit.record(actor=f"system:{actor}", agency="SPD", action="PURGE", outcome="DONE", rows=100,
                 details={"purged": "100", "held_kept": "9"})
    audit.record(actor=actor, agency="SPD", action="EVIDENCE_EXPORT", outcome="ALLOWED", case_number="24-9", rows=0,
                 details={"empty": "true", "warning": "the package holds no reads"})
    audit.record(actor=actor, agency="SPD", action="READS_IMPORT", outcome="ALLOWED", rows=3000,
                 details={"partner_agency": "SDPD"})
    audit.record(actor=actor, agency="SPD", action="PARTIAL_ADD", outcome="ALLOWED", case_number="24-9")
    audit.record(actor=actor, agency="SPD", action="ALERTS_FOLLOW", outcome="ALLOWED")


def test_report_sections(settings, codec, unique) -> None:
    actor = f"aud-{unique}"
    _write_period_events(settings, codec, actor)
    today = datetime.now(timezone.utc).date()
    report = build_report(read_events(settings, codec), *period(today, today))
    assert report["chain"]["ok"], report["chain"]["problems"]
    mine = [r for r in report["queries_by_user_and_purpose"] if r["user"] == actor]
    assert {(r["case"], r["queries"], r["rows"]) for r in mine} == {("24-9", 1, 4), ("none", 1, 1)}
    assert [r["rule"] for r in report["queries_refused"] if r["actor"] == actor] == ["R-READONLY"]
    assert [r["purpose"] for r in report["queries_without_case_number"] if r["actor"] == actor] == [
        "burglary series pattern analysis"]
    assert any(r["actor"] == actor and "training" in r["reason"] for r in report["logins_refused"])
    assert any(r["actor"] == actor for r in report["releases"])
    assert {r["action"] for r in report["holds_and_purges"] if r["actor"] == f"system:{actor}"} == {"HOLD_ADD", "PURGE"}
    assert [r["details"]["empty"] for r in report["evidence_exports"] if r["actor"] == actor] == ["true"]
    assert [r["rows"] for r in report["imports"] if r["actor"] == actor] == [3000]
    assert [r["action"] for r in report["hotlist_and_partial_changes"] if r["actor"] == actor] == ["PARTIAL_ADD"]
    assert [r["action"] for r in report["alert_views_and_lists"] if r["actor"] == actor] == ["ALERTS_FOLLOW"]
    counts = report["events_by_type"]
    assert set(ACTIONS) <= set(counts) and counts["EVIDENCE_EXPORT"]["total"] >= 1
    assert counts["RELEASE_DENY"]["total"] >= 0 and counts["QUERY"]["REFUSED"] >= 1
    text = render_text(report)
    assert "Audit chain: INTACT" in text and "burglary series pattern analysis" in text
    purge_line = next(x for x in text.splitlines() if f"system:{actor}" in x and "PURGE" in x)
    assert "rows=100" in purge_line and "held_kept=9" in purge_line
    assert "WARNING: the package holds no reads" in text and "Events by type" in text
    # the period is honoured
    assert build_report(read_events(settings, codec), *period(today.replace(year=today.year - 1),
                                                               today.replace(year=today.year - 1)))[
        "events_in_period"] == 0


def test_every_event_type_written_anywhere_is_in_the_report() -> None:
    """Scan the source for the actions it audits; the report must name (and count) each one."""
    import re
    from pathlib import Path

    root = Path(__file__).parents[1]
    written: set[str] = set()
    word = r'"([A-Z]+(?:_[A-Z]+)*)"'
    for path in [*(root / "pipeline").rglob("*.py"), *(root / "topologies").rglob("*.py")]:
        text = path.read_text()
        consts = dict(re.findall(r'^([A-Z_]+) = ' + word, text, re.M))
        for line in text.splitlines():
            if "action=" in line or "_audit_quietly(" in line or "_publish_user(" in line \
                    or re.search(r'action = "', line):
                written |= set(re.findall(word, line))
                written |= {consts[n] for n in re.findall(r"action=([A-Z_]+)\b", line) if n in consts}
    written -= {"ALLOWED", "REFUSED", "FAILED", "DONE"}  # outcomes, not actions
    assert {"PURGE", "EVIDENCE_EXPORT", "READS_IMPORT", "QUERY", "RELEASE_DENY", "CHAIN_START"} <= written
    assert written - set(ACTIONS) == set()


def test_report_cli_json(settings, codec, unique, cli_env) -> None:
    actor = f"audcli-{unique}"
    _write_period_events(settings, codec, actor)
    day = datetime.now(timezone.utc).date().isoformat()
    args = ["audit", "report", "--from", day, "--to", day, "--json"]
    assert _alpr(args).exit_code != 0  # the report names plates and people: auditors log in
    auditor = f"auditor-{unique}"
    publish_user(settings, codec, auditor, role="AUDITOR")
    analyst = f"analyst-{unique}"
    publish_user(settings, codec, analyst)
    r = _alpr([*args, "--user", analyst, "--password-stdin"], f"{PASSWORD}\n")
    assert r.exit_code != 0 and "needs" in r.output
    r = _alpr([*args, "--user", auditor, "--password-stdin"], f"{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output.strip().splitlines()[-1])
    assert doc["chain"]["ok"] and any(x["user"] == actor for x in doc["queries_by_user_and_purpose"])


def _copy(settings, codec, name: str, tamper=None) -> str:
    """The audit topic copied into a fresh topic, with one event changed by `tamper`."""
    topic = make_topic(settings, name)
    events = read_events(settings, codec)
    pub = kafka.Publisher(settings, codec, "copy")
    for i, (_, ev) in enumerate(events):
        if tamper and i == len(events) // 2:
            ev = tamper(ev)
        if ev is not None:
            pub.publish(topic, ev.actor, ev)
    pub.flush()
    return topic


def test_verify_passes_on_the_real_chain_and_fails_on_tampered_copies(settings, codec, unique, cli_env) -> None:
    AuditLog(settings, codec, "verify-test").record(actor="x1", agency="SPD", action="QUERY", outcome="ALLOWED",
                                                     case_number="1", purpose="test")
    r = _alpr(["audit", "verify"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.splitlines()[0])["ok"] is True

    altered = _copy(settings, codec, f"audit-altered-{unique}", lambda ev: ev.model_copy(update={"actor": "nobody"}))
    r = _alpr(["audit", "verify", "--topic", altered])
    assert r.exit_code != 0 and "altered" in r.output and "BROKEN" in r.output

    removed = _copy(settings, codec, f"audit-removed-{unique}", lambda ev: None)
    r = _alpr(["audit", "verify", "--topic", removed])
    assert r.exit_code != 0 and "BROKEN" in r.output
    assert AUDIT == "alpr.audit"  # the copies never touched the real topic
    assert all(isinstance(ev, AuditEvent) for _, ev in read_events(settings, codec)[:1])
