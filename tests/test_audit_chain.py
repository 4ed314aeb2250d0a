"""The audit chain links across writers and restarts, and verification catches tampering."""

from __future__ import annotations

import pytest

from alpr.audit.trail import AuditLog, AuditUnavailable, read_events, verify_events
from alpr.ops.broker import free_port


def _write(settings, codec, writer: str, n: int) -> None:
    audit = AuditLog(settings, codec, writer)
    for i in range(n):
        audit.record(actor="analyst1", agency="SPD", action="QUERY", outcome="ALLOWED", case_number="24-1",
                     purpose="test", subject=f"SELECT {i}", rows=i)


@pytest.fixture(scope="module")
def chain(broker, tmp_path_factory):
    """Two writers and a restarted writer on the shared broker's audit topic."""
    from alpr.core.settings import load_settings
    from alpr.schemas import Codec

    settings = load_settings(kafka_bootstrap=broker.bootstrap)
    codec = Codec()
    _write(settings, codec, "proxy-1", 3)
    _write(settings, codec, "proxy-2", 2)
    _write(settings, codec, "proxy-1", 2)  # restart of proxy-1: a new segment linked to the tail
    return read_events(settings, codec)


def test_chain_verifies(chain) -> None:
    report = verify_events(chain)
    assert report.ok, report.problems
    assert report.segments >= 3
    starts = [ev for _, ev in chain if ev.seq == 0]
    assert all(ev.action == "CHAIN_START" for ev in starts)
    # every segment after the first links to the event just before it on the topic
    for prev, (_, ev) in zip(chain, chain[1:]):
        if ev.seq == 0:
            assert ev.prev_hash == prev[1].hash


def test_altered_event_detected(chain) -> None:
    tampered = list(chain)
    off, ev = tampered[2]
    tampered[2] = (off, ev.model_copy(update={"actor": "someone_else"}))
    assert any("altered" in p for p in verify_events(tampered).problems)


def test_removed_event_detected(chain) -> None:
    tampered = chain[:2] + chain[3:]
    assert not verify_events(tampered).ok
    renumbered = [(i, ev) for i, (_, ev) in enumerate(tampered)]  # even with offsets rewritten
    assert not verify_events(renumbered).ok


def test_reordered_events_detected(chain) -> None:
    tampered = list(chain)
    tampered[1], tampered[2] = (tampered[1][0], tampered[2][1]), (tampered[2][0], tampered[1][1])
    assert not verify_events(tampered).ok


def test_broker_down_means_no_audit_and_an_error(settings, codec) -> None:
    down = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    audit = AuditLog(down, codec, "proxy-x", ack_timeout=1.0)
    with pytest.raises(AuditUnavailable):
        audit.record(actor="a", agency="SPD", action="QUERY", outcome="ALLOWED")
