"""`alpr status`: liveness from heartbeats alone, lag on the side, --watch on its interval, --json."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from alpr.core.runtime import ProcessRuntime
from alpr.ops import status
from alpr.schemas.models import Heartbeat, ProcessState

T = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def _hb(instance: str, role: str, at: datetime, **counters: float) -> Heartbeat:
    return Heartbeat(instance_id=instance, role=role, agency="RIC", host="h", pid=1, state=ProcessState.RUNNING,
                     started_at=T - timedelta(minutes=5), at=at, counters=counters, last_error=None,
                     metrics_url="http://127.0.0.1:9100")


def test_board_shows_the_hosted_proxy_under_its_warehouse_and_silence_as_down(settings) -> None:
    board = status.StatusBoard(settings)
    board.add(_hb("wh-1", "warehouse", T - timedelta(seconds=2), **{"sink-reads_written": 100.0,
                                                                    "proxy_hosted": 1.0, "proxy_port": 8124.0}))
    board.add(_hb("wh-1", "warehouse", T, **{"sink-reads_written": 300.0, "proxy_hosted": 1.0, "proxy_port": 8124.0}))
    board.add(_hb("worker-1", "worker", T - timedelta(seconds=30)))
    snap = board.snapshot({"warehouse": 5}, now=T)
    stages = {st["stage"]: st for st in snap["stages"]}
    assert (stages["warehouse"]["state"], stages["warehouse"]["lag"]) == ("UP", 5)
    assert stages["warehouse"]["throughput_per_s"] == {"sink-reads_written": 100.0}  # no proxy_port "rate"
    assert (stages["proxy"]["state"], stages["proxy"]["hosted_in"]) == ("UP", ["wh-1"])
    assert stages["worker"]["state"] == "DOWN" and stages["camera"]["state"] == "-"
    text = board.render({"warehouse": 5}, now=T)
    assert "in wh-1" in text and "hosts proxy :8124" in text
    json.dumps(snap)  # --json prints it as is


@pytest.mark.timeout(120)
def test_a_slow_lag_probe_never_makes_a_running_stage_look_down(settings, monkeypatch) -> None:
    """The lag probe took ~11 s and the screen was drawn after it, so every stage read DOWN."""
    fast = settings.model_copy(update={"heartbeat_interval_s": 1.0, "metrics_port": 0,
                                       "instance_id": f"worker-slowlag-{time.monotonic_ns()}"})

    def slow_lags(_settings):
        time.sleep(9)  # longer than down_after (6 s)
        return {"worker": 7, "alerts": None, "warehouse": None}

    monkeypatch.setattr(status, "stage_lags", slow_lags)
    with ProcessRuntime(fast, "worker", install_signals=False):
        screen = status.show(fast, watch=False, as_json=True, echo=lambda s: None, lag_wait_s=20)
    stages = {st["stage"]: st for st in json.loads(screen)["stages"]}
    assert (stages["worker"]["state"], stages["worker"]["lag"]) == ("UP", 7)


@pytest.mark.timeout(120)
def test_watch_redraws_on_its_interval(settings, monkeypatch) -> None:
    monkeypatch.setattr(status, "stage_lags", lambda _s: (time.sleep(10), {})[1])  # lag never holds a screen up
    stop, stamps = threading.Event(), []

    def echo(screen: str) -> None:
        stamps.append(time.monotonic())
        if len(stamps) >= 4:
            stop.set()

    t = threading.Thread(target=status.show, args=(settings, True), daemon=True,
                         kwargs={"interval": 0.5, "stop": stop, "echo": echo})
    t.start()
    t.join(30)
    assert len(stamps) >= 4
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(g < 1.5 for g in gaps), gaps
