"""`alpr stack up|down|status`: the embedded stack on one machine.

up: starts the dev broker on loopback (detached), creates every topic from
infra/topics.yaml, and applies the ClickHouse migrations to the chDB store under
data_dir. The pids and addresses go to data_dir/stack.json so `down` and
`status` find them. Against a real cluster, `alpr topics apply` and
`alpr migrate` do the topic and DDL steps alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from alpr.core import kafka
from alpr.ops.broker import DevBroker, pid_alive, stop_pid
from alpr.core.errors import AlprError, Unavailable
from alpr.core.migrations import current_version, migrate
from alpr.core.settings import Settings
from alpr.core.store import open_store
from alpr.core.topics import apply_topics


def _state_path(settings: Settings) -> Path:
    return settings.data_dir / "stack.json"


def read_state(settings: Settings) -> dict:
    try:
        return json.loads(_state_path(settings).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_state(settings: Settings, state: dict) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


@dataclass
class Component:
    name: str
    state: str  # "running", "stopped", "ready", "external"
    where: str


def up(settings: Settings) -> list[Component]:
    state = read_state(settings)
    broker_pid = state.get("broker", {}).get("pid")
    if broker_pid and pid_alive(broker_pid):
        raise AlprError(f"the stack is already up (dev broker pid {broker_pid}); `alpr stack down` first")
    broker = DevBroker(settings.bind_host, settings.broker_port, settings.data_dir / "logs" / "broker.log")
    broker.start(detach=True)
    state = {"broker": {"pid": broker.process.pid, "bootstrap": broker.bootstrap}, "started_at": time.time()}
    write_state(settings, state)
    try:
        bootstrap_settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
        kafka.check_reachable(bootstrap_settings, timeout=10)
        apply_topics(kafka.admin(bootstrap_settings), replication_factor=1)
        store = open_store(settings)
        try:
            migrate(store, settings)
        finally:
            store.close()
    except Exception:
        down(settings)
        raise
    return status(settings)


def down(settings: Settings) -> list[str]:
    state = read_state(settings)
    stopped = []
    for name, info in state.items():
        if isinstance(info, dict) and info.get("pid") and pid_alive(info["pid"]):
            stop_pid(info["pid"])
            stopped.append(f"{name} (pid {info['pid']})")
    _state_path(settings).unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> list[Component]:
    state = read_state(settings)
    out = []
    b = state.get("broker")
    if b and pid_alive(b["pid"]):
        out.append(Component("kafka (dev broker)", "running", f"{b['bootstrap']} pid {b['pid']}"))
    elif b:
        out.append(Component("kafka (dev broker)", "stopped", f"{b['bootstrap']} (pid {b['pid']} gone)"))
    else:  # not started by `stack up`: say whether anything answers there, not what the settings hope
        try:
            kafka.check_reachable(settings, timeout=2)
            out.append(Component("kafka", "running", settings.kafka_bootstrap))
        except Unavailable:
            out.append(Component("kafka", "stopped", f"{settings.kafka_bootstrap} (start it: alpr stack up)"))
    for name, info in state.items():
        if name in ("broker", "started_at") or not isinstance(info, dict):
            continue
        alive = pid_alive(info["pid"])
        out.append(Component(name, "running" if alive else "stopped", f"{info.get('where', '')} pid {info['pid']}"))
    if settings.clickhouse_url:
        out.append(Component("clickhouse (server)", "external", settings.clickhouse_url))
    else:
        path = settings.data_dir / "clickhouse"
        out.append(Component("clickhouse (embedded chDB)", "ready" if path.exists() else "absent",
                             f"{path} schema {_embedded_version(settings) if path.exists() else '-'}"))
    return out


def _embedded_version(settings: Settings) -> str:
    """Schema version of the embedded store, if no other process holds it open."""
    try:
        store = open_store(settings)
    except AlprError:
        return "(in use by another process)"
    try:
        return str(current_version(store, settings))
    finally:
        store.close()
