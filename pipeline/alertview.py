"""How an alert reads to a person (operator view and demo). Plates are shown here by design:
this is the operator's alert view, the one place outside topics and ClickHouse where they appear."""

from __future__ import annotations

from schemas import Alert


def format_alert(alert: Alert) -> str:
    r = alert.read
    if alert.hotlist_entry is not None:
        e = alert.hotlist_entry
        matched = f"hotlist {e.state} {e.plate}: {e.reason.value.replace('_', ' ').lower()}, case {e.case_number}"
    elif alert.partial is not None:
        p = alert.partial
        matched = f"partial plate {p.pattern}: {p.incident_type}, case {p.case_number}"
    else:
        matched = "unknown match"
    lines = [
        f"*** ALERT {alert.kind.value} *** {r.plate}  ({matched})",
        f"    camera {r.camera_id} ({r.agency}) at {r.captured_at:%Y-%m-%d %H:%M:%S}Z, "
        f"position {r.position.lat:.5f},{r.position.lon:.5f}, read confidence {r.confidence:.2f}",
    ]
    lines += [f"    NOTICE: {n}" for n in alert.notices]
    lines.append(f"    {alert.verify_before_action}")
    return "\n".join(lines)
