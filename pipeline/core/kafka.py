"""Kafka clients for every stage: configuration, publishing with delivery checks,
and consuming typed records with a dead-letter path.

Everything speaks plain Kafka protocol through confluent-kafka (librdkafka); nothing
here knows about the dev broker. Consumers never auto-commit: a stage commits only
after its effect is durable (at-least-once).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Generic, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from alpr.core.errors import DeliveryFailed, Unavailable
from alpr.core.logs import get_log
from alpr.core.settings import Settings
from alpr.core.topics import DEADLETTER
from alpr.schemas import Codec, DeadLetter, Record, UndecodableRecord

log = get_log(__name__)
R = TypeVar("R", bound=Record)


_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
_QUIET_LOG = logging.getLogger("librdkafka.probe")
_QUIET_LOG.propagate = False
_QUIET_LOG.addHandler(logging.NullHandler())


def _common(settings: Settings, client_id: str) -> dict:
    conf = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "logger": _LIBRDKAFKA_LOG,  # librdkafka's own lines go through logging, not raw stderr
        "client.id": f"alpr-{client_id}-{socket.gethostname()}",
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol == "SASL_SSL":
        conf.update({
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": settings.kafka_sasl_username or "",
            "sasl.password": settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else "",
        })
    return conf


def producer_config(settings: Settings, client_id: str, **overrides) -> dict:
    return {
        **_common(settings, client_id),
        "acks": "all",                # a record counts as sent only when every in-sync replica has it
        "enable.idempotence": True,   # broker-side retries never duplicate or reorder a partition
        "linger.ms": 5,               # small batches: latency matters more than the last % of throughput
        "compression.type": "lz4",    # cheap CPU, frames are JPEG (incompressible) but reads are not
        "message.max.bytes": 4194304, # JPEG frames up to 4 MiB, same as the topic's max.message.bytes
        **overrides,
    }


def consumer_config(settings: Settings, group: str, client_id: str, **overrides) -> dict:
    return {
        **_common(settings, client_id),
        "group.id": group,
        "enable.auto.commit": False,         # commit only after the effect is durable
        "auto.offset.reset": "earliest",     # a new group starts from the oldest record: nothing skipped
        "session.timeout.ms": settings.kafka_session_timeout_ms,  # a dead member is noticed this fast
        "heartbeat.interval.ms": settings.kafka_session_timeout_ms // 4,
        "max.poll.interval.ms": 300000,
        "fetch.message.max.bytes": 4194304,
        **overrides,
    }


def admin(settings: Settings, **overrides) -> AdminClient:
    return AdminClient({**_common(settings, "admin"), **overrides})


def check_reachable(settings: Settings, timeout: float = 5.0) -> None:
    """Fail fast with one line when no broker answers, instead of librdkafka retrying forever."""
    try:
        admin(settings, logger=_QUIET_LOG).list_topics(timeout=timeout)
    except KafkaException as exc:
        if "ALPR_KAFKA_BOOTSTRAP" not in os.environ and not _configured_in_file():
            raise Unavailable(f"no Kafka broker at {settings.kafka_bootstrap}: start the embedded stack with "
                              "`alpr stack up`, or set ALPR_KAFKA_BOOTSTRAP to your cluster") from None
        raise Unavailable(f"Kafka broker unreachable at {settings.kafka_bootstrap} "
                          f"(ALPR_KAFKA_BOOTSTRAP): {exc.args[0].str()}") from None


def _configured_in_file() -> bool:
    """Whether the TOML file named by ALPR_CONFIG sets the bootstrap (then the cluster is meant)."""
    path = os.environ.get("ALPR_CONFIG")
    return bool(path) and "kafka_bootstrap" in Path(path).read_text(errors="replace")


class Publisher:
    """A producer of typed records that knows which deliveries failed.

    `flush()` raises DeliveryFailed if any record since the last flush was not
    acknowledged, so callers commit input offsets only after a clean flush.
    """

    def __init__(self, settings: Settings, codec: Codec, client_id: str, **overrides) -> None:
        self.codec = codec
        self._producer = Producer(producer_config(settings, client_id, **overrides))
        self._failed: list[str] = []
        self.delivered = 0
        self.healthy = True  # the last flush had every record acknowledged

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed.append(f"{msg.topic()}: {err.str()}")
            log.error("delivery.failed", topic=msg.topic(), error=err.str())
        else:
            self.delivered += 1

    def publish(self, topic: str, key: str | bytes | None, record: Record | None,
                headers: dict[str, str] | None = None) -> None:
        """Queue one record (None is a tombstone). A full local queue waits for room, never drops."""
        value = None if record is None else self.codec.encode(record, topic)
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery,
                                       headers=list((headers or {}).items()))
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: serve callbacks, then retry
        self._producer.poll(0)

    def publish_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery)
        self._producer.poll(0)

    def poll(self, timeout: float = 0) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        failed, self._failed = self._failed, []
        self.healthy = not remaining and not failed
        if remaining:
            raise DeliveryFailed(f"{remaining} records not acknowledged within {timeout:.0f}s")
        if failed:
            raise DeliveryFailed(f"{len(failed)} records failed: {failed[0]}")


@dataclass(frozen=True)
class Received(Generic[R]):
    message: Message
    record: R


class RecordConsumer(Generic[R]):
    """Typed records from one or more topics; what does not decode goes to the dead-letter topic.

    Offsets are committed by the caller (`commit()`), after its effect is durable.
    A record sent to the dead-letter topic counts as handled once the dead letter is
    acknowledged, so it is committed with the rest.
    """

    def __init__(self, settings: Settings, codec: Codec, group: str, topics: list[str], model: type[R],
                 deadletters: Publisher, client_id: str | None = None, **overrides) -> None:
        self.group, self.model, self.codec = group, model, codec
        self._deadletters = deadletters
        self._consumer = Consumer(consumer_config(settings, group, client_id or group, **overrides))
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.assigned: set[tuple[str, int]] = set()
        self.joined = False  # a rebalance has completed at least once (even with no partitions for us)
        self.dead_lettered = 0

    def _on_assign(self, consumer: Consumer, partitions) -> None:
        self.joined = True
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        log.info("partitions.assigned", group=self.group, partitions=",".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions) -> None:
        self.assigned -= {(p.topic, p.partition) for p in partitions}
        log.info("partitions.revoked", group=self.group, partitions=",".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def poll_batch(self, max_records: int = 500, timeout: float = 0.5) -> list[Received[R]]:
        """Up to max_records decoded records; undecodable ones are dead-lettered on the way."""
        out: list[Received[R]] = []
        for msg in self._consumer.consume(max_records, timeout):
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume.error", group=self.group, error=msg.error().str())
                continue
            try:
                out.append(Received(msg, self.codec.decode(msg.value(), self.model)))
            except UndecodableRecord as exc:
                self.dead_letter(msg, exc.reason, "UndecodableRecord")
        return out

    def __iter__(self) -> Iterator[Received[R]]:
        while True:
            yield from self.poll_batch()

    def dead_letter(self, msg: Message, reason: str, error_class: str) -> None:
        from alpr.core.metrics import DEAD_LETTERS

        self.dead_lettered += 1
        DEAD_LETTERS.labels(self.group, msg.topic()).inc()
        log.warning("record.dead_lettered", group=self.group, topic=msg.topic(), partition=msg.partition(),
                    offset=msg.offset(), reason=reason[:200])
        self._deadletters.publish(DEADLETTER, msg.topic(), DeadLetter(
            source_topic=msg.topic(), source_partition=msg.partition(), source_offset=msg.offset(),
            consumer=self.group, reason=reason, error_class=error_class, key=msg.key(), value=msg.value(),
            failed_at=datetime.now(timezone.utc)))

    def pause(self) -> None:
        """Stop fetching on every assigned partition, keeping group membership (keep calling poll_batch)."""
        self._consumer.pause(self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(self._consumer.assignment())

    def commit(self) -> None:
        """Commit what was consumed; call only after outputs (and dead letters) are flushed."""
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise

    def commit_through(self, messages: list[Message]) -> None:
        """Commit each partition up to and including the latest of `messages`, nothing beyond.

        For a consumer with batches in flight: what was fetched after these messages is not
        committed with them (commit() would commit it). Call after their outputs are flushed.
        """
        from confluent_kafka import TopicPartition

        ends: dict[tuple[str, int], int] = {}
        for msg in messages:
            key = (msg.topic(), msg.partition())
            ends[key] = max(ends.get(key, -1), msg.offset() + 1)  # a committed offset names the next record
        if ends:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=False)

    def close(self) -> None:
        self._consumer.close()  # leaves the group at once, so partitions move without waiting a session timeout



def read_to_end(settings: Settings, topic: str, partition: int = 0, start: int | None = None,
                idle: float = 1.0, timeout: float = 120.0) -> Iterator[Message]:
    """Every message of a partition from `start` (default: the beginning) to the end as of now.

    "The end" is not taken from the high watermark alone: some Kafka-protocol brokers
    report it as the base offset of the last batch + 1, which would stop short. This
    reads until it has passed the reported watermark and then seen nothing for
    `idle` seconds, which is right on Apache Kafka and on such brokers alike.
    """
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = Consumer(consumer_config(settings, f"reader-{socket.gethostname()}", "reader",
                                        logger=_QUIET_LOG))
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING if start is None else start)])
        position = -1 if start is None else start - 1  # a start at the end has nothing to wait for
        deadline = time.monotonic() + timeout
        last_seen = time.monotonic()
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if position + 1 >= high and time.monotonic() - last_seen >= idle:
                    return
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise Unavailable(f"reading {topic}: {msg.error().str()}")
            position, last_seen = msg.offset(), time.monotonic()
            yield msg
        raise Unavailable(f"reading {topic} did not finish within {timeout:.0f}s")
    finally:
        consumer.close()


def high_watermark(settings: Settings, topic: str, partition: int = 0, timeout: float = 10.0) -> tuple[int, int]:
    """(low, high) as the broker reports them; see read_to_end for why `high` may be short."""
    from confluent_kafka import TopicPartition

    consumer = Consumer(consumer_config(settings, "watermarks", "watermarks", logger=_QUIET_LOG))
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
    finally:
        consumer.close()


# --- compacted topics: the one reader

def partitions_of(settings: Settings, topic: str) -> list[int]:
    md = admin(settings).list_topics(topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        raise Unavailable(f"topic {topic} not found on {settings.kafka_bootstrap} (run `alpr topics apply`)")
    return sorted(md.partitions)


def read_compacted(settings: Settings, topic: str, idle: float = 1.0) -> tuple[dict[str, Message], dict[int, int]]:
    """Latest message per key over all partitions (tombstones included), and each partition's next offset.

    Uses `kafka.read_to_end`, which is right even where the broker reports a short high watermark.
    """
    parts = partitions_of(settings, topic)

    def one(p: int) -> tuple[int, list[Message]]:
        return p, list(read_to_end(settings, topic, p, idle=idle))

    latest: dict[str, Message] = {}
    next_offsets: dict[int, int] = {}
    with ThreadPoolExecutor(len(parts)) as pool:
        for p, messages in pool.map(one, parts):
            for msg in messages:
                latest[(msg.key() or b"").decode()] = msg
            next_offsets[p] = messages[-1].offset() + 1 if messages else 0
    return latest, next_offsets


def current_records(settings: Settings, codec: Codec, topic: str, record_type: type[R]) -> dict[str, R]:
    """A compacted topic as it holds now: key -> latest record, tombstoned keys absent.

    A record that does not decode is logged by offset and left out; callers that must fail
    closed on one (evidence holds) read `read_compacted` themselves."""
    out: dict[str, R] = {}
    latest, _ = read_compacted(settings, topic)
    for key, msg in latest.items():
        if msg.value() is None:
            continue
        try:
            out[key] = codec.decode(msg.value(), record_type)
        except UndecodableRecord as exc:
            log.error("compacted.undecodable", topic=topic, partition=msg.partition(), offset=msg.offset(),
                      reason=exc.reason)
    return out
