"""The declarative topic list (`infra/topics.yaml`) as typed objects, and applying it."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import yaml

from alpr.core.errors import Unavailable
from alpr.core.logs import get_log

log = get_log(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    record: str
    partitions: int
    replication_factor: int
    key: str
    config: dict[str, str] = field(default_factory=dict)


def load_topics() -> dict[str, TopicSpec]:
    doc = yaml.safe_load(resources.files("alpr.infra").joinpath("topics.yaml").read_text())
    defaults = doc.get("defaults", {})
    out = {}
    for t in doc["topics"]:
        config = {**defaults.get("config", {}), **t.get("config", {})}
        out[t["name"]] = TopicSpec(
            name=t["name"], record=t["record"], partitions=int(t["partitions"]),
            replication_factor=int(t.get("replication_factor", defaults.get("replication_factor", 1))),
            key=t["key"], config={k: str(v) for k, v in config.items()},
        )
    return out


TOPICS = load_topics()
FRAMES, READS, HOTLIST, PARTIALS = "alpr.frames", "alpr.reads", "alpr.hotlist", "alpr.partials"
ALERTS, AUDIT, HOLDS, RELEASES, DEADLETTER = "alpr.alerts", "alpr.audit", "alpr.holds", "alpr.releases", "alpr.deadletter"
STATUS = "alpr.status"
USERS = "alpr.users"


def apply_topics(admin, replication_factor: int | None = None, timeout: float = 15.0) -> list[str]:
    """Create every missing topic; returns the names created. Existing topics are left as they are."""
    from confluent_kafka.admin import NewTopic

    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in TOPICS.values() if t.name not in existing]
    if not missing:
        return []
    new = []
    for t in missing:
        rf = replication_factor or t.replication_factor
        config = dict(t.config)
        if rf < 2:
            config.pop("min.insync.replicas", None)  # cannot exceed the replication factor
        new.append(NewTopic(t.name, num_partitions=t.partitions, replication_factor=rf, config=config))
    created = []
    for name, fut in admin.create_topics(new, request_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
            created.append(name)
            log.info("topic.created", topic=name)
        except Exception as exc:  # KafkaException carries the broker's error code
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                continue
            raise Unavailable(f"could not create topic {name}: {exc}") from exc
    return created
