"""Consumer lag that is right on Apache Kafka and on brokers whose high watermark is short.

Lag = true end of the partition - the group's committed offset. The "true end" is
not the ListOffsets answer alone: the dev broker reports the base offset of the
last batch + 1 (see ENGINEERING-NOTES), which hides the rest of that batch. So we
read the last batch itself (from reported end - 1) and take its last offset + 1.
On Apache Kafka that read returns one record and confirms the reported end.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, TopicPartition

from alpr.core import kafka
from alpr.core.settings import Settings


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    end: int
    committed: int | None

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


def true_end(consumer: Consumer, topic: str, partition: int, timeout: float = 5.0) -> int:
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
    if high <= low:
        return high
    consumer.assign([TopicPartition(topic, partition, high - 1)])
    end = high
    idle_polls = 0
    while idle_polls < 2:
        msgs = consumer.consume(500, 0.2)
        if not msgs:
            idle_polls += 1
        for m in msgs:
            if not m.error():
                end = max(end, m.offset() + 1)
            elif m.error().code() == KafkaError._PARTITION_EOF:
                idle_polls = 2
    consumer.unassign()
    return end


def group_lag(settings: Settings, group: str, topic: str, partitions: int) -> list[PartitionLag]:
    """Per-partition lag of `group` on `topic`, without joining the group."""
    probe = Consumer(kafka.consumer_config(settings, group, f"lag-{group}", **{
        "enable.partition.eof": True, "fetch.max.bytes": 1048576,
        "logger": kafka._QUIET_LOG}))
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = {tp.partition: (None if tp.offset == OFFSET_INVALID or tp.offset < 0 else tp.offset)
                     for tp in probe.committed(tps, timeout=10)}
        return [PartitionLag(topic, p, true_end(probe, topic, p), committed[p]) for p in range(partitions)]
    finally:
        probe.close()
