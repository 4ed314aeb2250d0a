"""The quarterly audit and the chain check, read straight from the audit topic.

Consumes: every event on `alpr.audit` (`alpr.audit.trail.read_events`), so it works
in embedded and server mode alike and needs no ClickHouse.
Produces: `verify()` -> the chain report; `build_report()` -> what an auditor
reviews for a period: a count of every event type the system writes (by outcome,
zero included, and any type this program does not know, so nothing is hidden),
queries per user and purpose, refused queries, queries without a real case
number, refused logins with their reasons (untrained, disabled, locked, wrong
password), user changes, releases, evidence exports (empty ones flagged), reads
imports, holds and purges (with the rows purged and kept), hotlist and
partial-plate changes, alert-view sessions and list views, failures, and the state
of the hash chain.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta, timezone

from alpr.audit.trail import ChainReport, read_events, verify_events
from alpr.core.errors import AlprError
from alpr.core.settings import Settings
from alpr.core.topics import AUDIT
from alpr.schemas import AuditEvent, Codec, UndecodableRecord


def load(settings: Settings, codec: Codec, topic: str = AUDIT) -> list[tuple[int, AuditEvent]]:
    try:
        return read_events(settings, codec, topic)
    except UndecodableRecord as exc:
        raise AlprError(f"the audit topic {topic} holds an event that does not decode ({exc.reason}): "
                        "treat the trail as tampered") from None


def verify(settings: Settings, codec: Codec, topic: str = AUDIT) -> ChainReport:
    return verify_events(load(settings, codec, topic))


def period(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, end+1 00:00) in UTC: both dates included."""
    if end < start:
        raise AlprError("--to is before --from")
    return (datetime.combine(start, time.min, timezone.utc),
            datetime.combine(end + timedelta(days=1), time.min, timezone.utc))


# Every action the system writes, with where it comes from. tests/test_audit_report.py checks
# the source for `action=` values missing here, so a new event type cannot be left out.
ACTIONS: dict[str, str] = {
    "CHAIN_START": "a writer process began its audit chain segment",
    "LOGIN": "a login (CLI or proxy), allowed or refused",
    "QUERY": "an analyst query through the SQL proxy",
    "USER_ADD": "user added", "USER_DISABLE": "user disabled", "USER_ENABLE": "user enabled",
    "USER_TRAIN": "training recorded", "USER_UNLOCK": "lock cleared",
    "RELEASE_REQUEST": "release request filed", "RELEASE_APPROVE": "release approved",
    "RELEASE_DENY": "release denied", "RELEASE_EXPORT": "release package written",
    "EVIDENCE_EXPORT": "evidence package written",
    "HOLD_ADD": "evidence hold placed", "HOLD_RELEASE": "evidence hold released", "HOLD_LIST": "holds listed",
    "PURGE": "retention purge (rows purged, held rows kept)",
    "READS_IMPORT": "partner reads imported",
    "HOTLIST_IMPORT": "hotlist file imported", "HOTLIST_ADD": "hotlist entry added",
    "HOTLIST_REMOVE": "hotlist entry removed", "HOTLIST_LIST": "hotlist listed",
    "PARTIAL_ADD": "partial-plate pattern added", "PARTIAL_REMOVE": "partial-plate pattern removed",
    "PARTIAL_LIST": "partial-plate patterns listed",
    "ALERTS_FOLLOW": "a session following live alerts",
}
_DETAILS = ("purged", "held_kept", "alerts_purged", "as_of", "empty", "warning", "held_read_ids_not_in_store",
            "partner_agency", "rows_in_file")


def _brief(ev: AuditEvent) -> dict:
    return {"at": ev.occurred_at.isoformat(), "actor": ev.actor, "action": ev.action, "outcome": ev.outcome.value,
            "case": ev.case_number, "purpose": ev.purpose, "reason": ev.reason, "subject": ev.subject[:300],
            "rule": ev.details.get("rule"), "rows": ev.rows,
            "details": {k: ev.details[k] for k in _DETAILS if k in ev.details}}


def build_report(events: list[tuple[int, AuditEvent]], start: datetime, end: datetime) -> dict:
    """The period's report; the chain is checked over the whole topic (a break before the period matters too)."""
    chain = verify_events(events)
    evs = [ev for _, ev in events if start <= ev.occurred_at < end]
    queries = [e for e in evs if e.action == "QUERY"]
    allowed = [e for e in queries if e.outcome.value == "ALLOWED"]
    per_user_purpose: dict[tuple[str, str, str], dict] = defaultdict(lambda: {"queries": 0, "rows": 0})
    for e in allowed:
        row = per_user_purpose[(e.actor, e.case_number or "", e.purpose or "")]
        row["queries"] += 1
        row["rows"] += e.rows or 0
    logins = Counter(e.actor for e in evs if e.action == "LOGIN" and e.outcome.value == "ALLOWED")
    by_action: dict[str, dict[str, int]] = {a: {} for a in ACTIONS}
    for e in evs:
        counts = by_action.setdefault(e.action, {})
        counts[e.outcome.value] = counts.get(e.outcome.value, 0) + 1
    of = lambda *actions: [_brief(e) for e in evs if e.action in actions]  # noqa: E731
    return {
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "chain": {"ok": chain.ok, "events": chain.events, "segments": chain.segments, "problems": chain.problems},
        "events_in_period": len(evs),
        "events_by_type": {a: {"total": sum(c.values()), **dict(sorted(c.items()))} for a, c in by_action.items()},
        "unknown_event_types": sorted(set(by_action) - set(ACTIONS)),
        "queries_by_user_and_purpose": [
            {"user": u, "case": c, "purpose": p, **v} for (u, c, p), v in sorted(per_user_purpose.items())],
        "queries_refused": [_brief(e) for e in queries if e.outcome.value == "REFUSED"],
        "queries_failed": [_brief(e) for e in queries if e.outcome.value == "FAILED"],
        "queries_without_case_number": [_brief(e) for e in allowed if (e.case_number or "").lower() == "none"],
        "logins_by_user": dict(sorted(logins.items())),
        "logins_refused": [_brief(e) for e in evs if e.action == "LOGIN" and e.outcome.value == "REFUSED"],
        "user_changes": [_brief(e) for e in evs if e.action.startswith("USER_")],
        "releases": [_brief(e) for e in evs if e.action.startswith("RELEASE")],
        "evidence_exports": of("EVIDENCE_EXPORT"),
        "imports": of("READS_IMPORT", "HOTLIST_IMPORT"),
        "holds_and_purges": [_brief(e) for e in evs if any(w in e.action for w in ("HOLD_ADD", "HOLD_RELEASE",
                                                                                    "PURGE", "RETENTION"))],
        "hotlist_and_partial_changes": of("HOTLIST_ADD", "HOTLIST_REMOVE", "PARTIAL_ADD", "PARTIAL_REMOVE"),
        "alert_views_and_lists": of("ALERTS_FOLLOW", "HOTLIST_LIST", "PARTIAL_LIST", "HOLD_LIST"),
        "other_failures": [_brief(e) for e in evs if e.outcome.value == "FAILED" and e.action != "QUERY"],
    }


def render_text(report: dict) -> str:
    """The report for a person: one section per question an auditor asks."""
    out = [f"ALPR audit {report['period']['from'][:10]} .. {report['period']['to'][:10]} (UTC, end exclusive)"]
    ch = report["chain"]
    out.append(f"Audit chain: {'INTACT' if ch['ok'] else 'BROKEN'} ({ch['events']} events, {ch['segments']} segments)")
    out += [f"  ! {p}" for p in ch["problems"]]
    out.append(f"Events in period: {report['events_in_period']}")
    out.append("\nEvents by type (total, by outcome):")
    for action, counts in report["events_by_type"].items():
        outcomes = ", ".join(f"{k.lower()}={v}" for k, v in counts.items() if k != "total")
        unknown = "  (unknown type)" if action in report["unknown_event_types"] else ""
        out.append(f"  {action:<16} {counts['total']:>7}  {outcomes}{unknown}")

    def section(title: str, rows: list, fmt) -> None:
        out.append(f"\n{title}: {len(rows)}")
        out.extend("  " + fmt(r) for r in rows)

    section("Queries by user, case and purpose", report["queries_by_user_and_purpose"],
            lambda r: f"{r['user']:<20} case={r['case']:<14} queries={r['queries']:<5} rows={r['rows']:<8} {r['purpose']}")
    out.append("\nLogins by user: " + (", ".join(f"{u}={n}" for u, n in report["logins_by_user"].items()) or "none"))
    def line(r: dict) -> str:
        rows = "" if r["rows"] is None else f" rows={r['rows']}"
        extra = "".join(f" {k}={v}" for k, v in r["details"].items() if k not in ("warning",))
        warn = f" WARNING: {r['details']['warning']}" if "warning" in r["details"] else ""
        return (f"{r['at'][:19]} {r['actor']:<20} {r['action']:<16} {r['outcome']:<8}"
                f"{(' case=' + r['case']) if r['case'] else ''}{rows}{extra} {r['reason'] or r['subject'][:80]}{warn}")

    section("Refused logins (untrained, disabled, locked, wrong password)", report["logins_refused"], line)
    section("Refused queries", report["queries_refused"], line)
    section("Failed queries", report["queries_failed"], line)
    section("Queries without a case number (case 'none')", report["queries_without_case_number"],
            lambda r: f"{r['at'][:19]} {r['actor']:<20} purpose: {r['purpose']}")
    section("User changes", report["user_changes"], line)
    section("Releases to other agencies", report["releases"], line)
    section("Evidence exports", report["evidence_exports"], line)
    section("Imports (partner reads, hotlists)", report["imports"], line)
    section("Holds and purges", report["holds_and_purges"], line)
    section("Hotlist and partial-plate changes", report["hotlist_and_partial_changes"], line)
    section("Alert-view sessions and list views", report["alert_views_and_lists"], line)
    section("Other failures", report["other_failures"], line)
    return "\n".join(out)
