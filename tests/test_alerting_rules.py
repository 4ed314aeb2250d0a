"""Prometheus alert rules and the Grafana dashboard name only metrics and labels the code exposes.

An alert on a misspelt metric never fires, silently; these checks parse every
expression and compare each `alpr_*` series and label with alpr.core.metrics
(counters as `_total`, histograms as `_bucket`/`_sum`/`_count`, as prometheus_client
exposes them), and each alert's runbook with a section of docs/operations.md.
PromQL syntax itself is not checked here (no promtool): `promtool check rules` is the
command for a machine that has it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from alpr.core.metrics import REGISTRY

ROOT = Path(__file__).parents[1]
RULES = ROOT / "infra" / "prometheus" / "alpr-alerts.yaml"
DASHBOARD = ROOT / "infra" / "grafana" / "alpr-pipeline.json"
OPERATIONS = ROOT / "docs" / "operations.md"
TARGET_LABELS = {"job", "instance", "namespace", "pod", "le"}  # added by Prometheus or the histogram
_SELECTOR = re.compile(r"\b(alpr_[a-z_]+|up)\b(\{[^}]*\})?")


def exposed() -> dict[str, set[str]]:
    """Series name -> label names, as /metrics shows them."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    out: dict[str, set[str]] = {"up": set()}
    for collector in REGISTRY._collector_to_names:  # prometheus_client keeps no public list of metric objects
        for suffix in suffixes[collector._type]:
            out[collector._name + suffix] = set(collector._labelnames)
    return out


def check_expression(expr: str) -> list[str]:
    """Problems with the series and labels one PromQL expression selects."""
    known, problems = exposed(), []
    seen = False
    for name, selector in _SELECTOR.findall(expr):
        seen = True
        if name not in known:
            problems.append(f"{name}: not a series the pipeline exposes")
            continue
        for label in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", selector or ""):
            if label not in known[name] | TARGET_LABELS:
                problems.append(f"{name}: no label {label}")
    for label in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        for name in (n.strip() for n in label.split(",")):
            if name and not any(name in labels for labels in known.values()) and name not in TARGET_LABELS:
                problems.append(f"by ({name}): no series has that label")
    return problems if seen else ["selects no series"]


def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rule_file_shape() -> None:
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"}
    names = [g["name"] for g in doc["groups"]]
    assert len(names) == len(set(names))
    alerts = [r["alert"] for r in _rules()]
    assert len(alerts) == len(set(alerts)) and len(alerts) >= 10


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_every_alert_names_real_metrics_a_severity_and_a_runbook(rule: dict) -> None:
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
    assert check_expression(rule["expr"]) == []
    assert rule["labels"]["severity"] in ("page", "ticket")
    assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
    runbook = rule["annotations"]["runbook"]
    anchor = runbook.split("#", 1)[1]
    headings = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
                for h in re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), re.M)}
    assert runbook.startswith("docs/operations.md#") and anchor in headings, f"no section for {rule['alert']}"
    assert rule["annotations"]["summary"]


def test_the_check_catches_a_misspelt_metric_or_label() -> None:
    assert check_expression("sum(rate(alpr_reads_published_total[5m])) > 0")  # not a metric
    assert check_expression("sum(rate(alpr_reads[5m])) > 0")  # a counter without _total selects nothing
    assert check_expression('alpr_consumer_lag{grup="x"} > 1')
    assert check_expression("sum by (kamera) (rate(alpr_camera_frames_sent_total[5m]))")
    assert check_expression("sum(rate(alpr_reads_total[5m])) > 0") == []


def test_dashboard_panels_query_real_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource"}
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m")
            assert check_expression(expr) == [], f"{panel['title']}: {check_expression(expr)}"
    # Every metric the pipeline exposes is on the dashboard (a new metric gets a panel).
    shown = {name for p in panels for t in p["targets"] for name, _ in _SELECTOR.findall(t["expr"])}
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in exposed() if n != "up"}
    assert families <= {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in shown}
