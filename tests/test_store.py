"""The embedded store's shared session: a failed statement leaves nothing behind for the next caller."""

from __future__ import annotations

import pytest

from alpr.core.store import EmbeddedStore, StoreError


def test_a_failed_statement_starts_a_clean_session(tmp_path) -> None:
    """chDB can keep a failed query's partial output buffered in its session (the proxy saw it
    prepended to the next result); the store therefore renews the session after any failure, so
    nothing a failed statement left (buffered rows, temporary tables, settings) reaches the sink."""
    store = EmbeddedStore(tmp_path / "ch", "alpr")
    try:
        store.query_bytes("CREATE TEMPORARY TABLE scratch (x UInt8)")
        store.query_bytes("INSERT INTO scratch VALUES (1)")
        assert store.query_bytes("SELECT count() FROM scratch", "CSV") == b"1\n"
        with pytest.raises(StoreError, match="Limit for result exceeded"):
            store.query_bytes("SELECT number FROM numbers(100000) SETTINGS max_result_rows = 10, "
                              "result_overflow_mode = 'throw'", "CSV")
        assert store.query_bytes("SELECT 42", "CSV") == b"42\n"
        with pytest.raises(StoreError, match="UNKNOWN_TABLE|doesn't exist|does not exist"):
            store.query_bytes("SELECT count() FROM scratch", "CSV")
    finally:
        store.close()
