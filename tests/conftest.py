"""Real components for tests: a dev broker on a free port, chDB in a temp directory."""

from __future__ import annotations

import os
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
    """Read `count` messages from the start of a test's own topic (no group join)."""
    return drain_until(settings, topic, lambda got: len(got) >= count, timeout, partitions)


def drain_until(settings: Settings, topic: str, done, timeout: float = 20.0, partitions: int = 1) -> list:
    """Read from the start of a topic until `done(messages so far)` holds, or the deadline.

    For topics other tests share (frames, dead letters), where a count would be a guess:
    the test says what it is waiting for."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(kafka.consumer_config(settings, f"drain-{uuid.uuid4().hex[:8]}", "drain"))
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while not done(out) and time.monotonic() < deadline:
            out += [m for m in c.consume(500, 0.2) if not m.error()]
    finally:
        c.close()
    return out


@pytest.fixture
def alpr(settings, monkeypatch):
    """Run `alpr ARGS` in process against this test's broker and data dir: alpr(args, stdin) -> Result.

    Every ALPR_ variable of the caller's shell is scrubbed first, so a developer's own
    configuration never leaks into a test."""
    from click.testing import CliRunner

    from alpr.cli import cli
    from alpr.core.settings import settings as cached

    for key in [k for k in os.environ if k.startswith("ALPR_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ALPR_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("ALPR_DATA_DIR", str(settings.data_dir))
    cached.cache_clear()

    def run(args: list[str], stdin: str = ""):
        cached.cache_clear()
        return CliRunner().invoke(cli, args, input=stdin, catch_exceptions=False)

    yield run
    cached.cache_clear()


def alpr_env(**extra: str) -> dict[str, str]:
    """The environment for an `alpr` child process: the caller's, less every ALPR_ variable, plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ALPR_")}, **extra}


def wait_for(condition, timeout: float = 60.0, what: str = "the condition"):
    """Poll an observable condition until it holds (its value is returned) or fail the test naming it."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)  # polling a condition with a deadline, not synchronising on time
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
