"""The DDL applies to the embedded engine, once, and refuses edited history."""

from __future__ import annotations

import pytest

from alpr.core.errors import AlprError
from alpr.core.migrations import Migration, available, migrate


def test_migrations_applied_once(store, settings) -> None:
    assert migrate(store, settings) == []
    tables = {r["name"] for r in store.rows("SHOW TABLES FROM alpr")}
    assert {"reads", "holds", "held_reads", "held_reads_dict", "alerts", "audit_log"} <= tables
    ddl = store.scalar("SELECT create_table_query FROM system.tables WHERE database='alpr' AND name='reads'")
    assert "TTL" in ddl and "toIntervalDay(365)" in ddl and "NOT dictHas('alpr.held_reads_dict'" in ddl


def test_changed_migration_refused(store, settings, monkeypatch) -> None:
    first = available()[0]
    edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")
    monkeypatch.setattr("alpr.core.migrations.available", lambda: [edited])
    with pytest.raises(AlprError, match="changed after it was applied"):
        migrate(store, settings)
