"""`alpr demo` runs end to end (so it never goes stale) and its last line is the summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import alpr_env


@pytest.mark.timeout(300)
def test_demo_shows_reads_alerts_storage_and_audit() -> None:
    done = subprocess.run([sys.executable, "-m", "alpr.cli", "demo", "--duration", "35"], env=alpr_env(),
                          capture_output=True, text=True, timeout=280, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"frames", "reads", "alerts", "stored_reads", "audit_events"} <= set(summary)
    assert summary["frames"] > 0 and summary["reads"] > 0
    assert summary["alerts"] >= 3                       # exact, partial and possible hits on the demo hotlist
    assert summary["stored_reads"] == summary["reads"]  # the sink caught up before the demo ended
    assert summary["audit_events"] > 0
    out = done.stdout
    assert "EXACT ALERT" in out and "PARTIAL ALERT" in out and "POSSIBLE ALERT" in out
    assert "confirm through CLETS" in out and "tribal law enforcement" in out
    assert "analyst query without a case number: refused" in out
    # the summary counts what the narration showed, one for one
    lines = out.splitlines()
    assert sum("] read   " in line for line in lines) == summary["reads"]
    assert sum(line.startswith("*** ") and " ALERT  plate " in line for line in lines) == summary["alerts"]
    assert sum("] audit  " in line for line in lines) == summary["audit_events"]
