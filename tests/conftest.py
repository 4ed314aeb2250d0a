"""Real components for tests: a dev broker on a free port, chDB in a temp directory."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from alpr.core import kafka
from alpr.ops.broker import DevBroker, free_port
from alpr.core.migrations import migrate
from alpr.core.settings import Settings, load_settings
from alpr.core.store import EmbeddedStore
from alpr.core.topics import apply_topics
from alpr.schemas import Codec


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> DevBroker:
    """One dev broker for the session; tests isolate by topic names and group ids."""
    b = DevBroker("127.0.0.1", free_port(), tmp_path_factory.mktemp("broker") / "broker.log").start()
    s = load_settings(kafka_bootstrap=b.bootstrap)
    apply_topics(kafka.admin(s), replication_factor=1)
    yield b
    b.stop()


@pytest.fixture
def settings(broker: DevBroker, tmp_path: Path) -> Settings:
    return load_settings(kafka_bootstrap=broker.bootstrap, data_dir=tmp_path / "data")


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec()


@pytest.fixture
def store(settings: Settings):
    """A migrated embedded ClickHouse in this test's temp directory (closed after)."""
    s = EmbeddedStore(settings.data_dir / "clickhouse", settings.clickhouse_database)
    migrate(s, settings)
    yield s
    s.close()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


def make_topic(settings: Settings, name: str, partitions: int = 1) -> str:
    from confluent_kafka.admin import NewTopic

    client = kafka.admin(settings)  # keep a reference: a collected client cancels its futures
    client.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(10)
    return name


def drain(settings: Settings, topic: str, count: int, timeout: float = 20.0, partitions: int = 1) -> list:
    """Read `count` messages from the start of a topic by direct assignment (no group join)."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(kafka.consumer_config(settings, f"drain-{uuid.uuid4().hex[:8]}", "drain"))
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            for m in c.consume(count - len(out), 0.5):
                if not m.error():
                    out.append(m)
    finally:
        c.close()
    return out
