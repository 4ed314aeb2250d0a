"""Versioned schema migrations from `infra/clickhouse/NNN_name.sql`.

Each file is applied once, in order, and recorded with its checksum in
`schema_migrations`. An applied file that has since changed is an error: DDL
that ran is history, so a change is a new numbered file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from string import Template

from alpr.core.errors import AlprError
from alpr.core.logs import get_log
from alpr.core.settings import Settings
from alpr.core.store import Store, StoreError

log = get_log(__name__)
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql\Z")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, settings: Settings) -> list[str]:
        text = Template(self.sql).substitute(db=settings.clickhouse_database, retention_days=settings.retention_days)
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in text.split(";") if s.strip()]


def available() -> list[Migration]:
    folder = resources.files("alpr.infra").joinpath("clickhouse")
    out = []
    for entry in folder.iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(out, key=lambda m: m.version)


def migrate(store: Store, settings: Settings) -> list[str]:
    """Apply what is missing; returns the names applied."""
    db = settings.clickhouse_database
    store.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    store.command(f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
                  "checksum String, applied_at DateTime64(6, 'UTC') DEFAULT now64(6)) "
                  "ENGINE = MergeTree ORDER BY version")
    applied = {r["version"]: r for r in store.rows(f"SELECT version, name, checksum FROM {db}.schema_migrations")}
    done = []
    for mig in available():
        if mig.version in applied:
            if applied[mig.version]["checksum"] != mig.checksum:
                raise AlprError(f"migration {mig.version:03d}_{mig.name}.sql changed after it was applied; "
                                "add a new numbered file instead")
            continue
        for statement in mig.statements(settings):
            store.command(statement)
        store.command(f"INSERT INTO {db}.schema_migrations (version, name, checksum) "
                      f"VALUES ({mig.version}, '{mig.name}', '{mig.checksum}')")
        log.info("migration.applied", version=mig.version, name=mig.name)
        done.append(mig.name)
    return done


def current_version(store: Store, settings: Settings) -> int | None:
    try:
        return store.scalar(f"SELECT max(version) FROM {settings.clickhouse_database}.schema_migrations")
    except StoreError as exc:  # no migrations table yet: nothing applied
        if not any(code in str(exc) for code in ("UNKNOWN_TABLE", "UNKNOWN_DATABASE")):
            raise
        return None
