"""ClickHouse, embedded or served, behind one small interface.

- Embedded: chDB runs the ClickHouse engine in this process on `data_dir/clickhouse`.
  Only one process may open that directory, so in embedded mode `alpr warehouse`
  owns it and hosts whatever else needs the store.
- Server: clickhouse-connect over HTTP(S) to `clickhouse_url`.

Both take the same SQL and DDL. Results come back as bytes in a ClickHouse output
format (what the SQL proxy streams to clients) or as dicts (JSONEachRow) for code.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from pathlib import Path

import pyarrow as pa

from alpr.core.errors import AlprError, Unavailable
from alpr.core.settings import Settings


class StoreError(AlprError):
    """ClickHouse refused or failed a statement; the message is ClickHouse's own."""


class Store(ABC):
    database: str

    @abstractmethod
    def query_bytes(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        """Run one statement and return its result in output format `fmt`."""

    @abstractmethod
    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Insert rows; column names of `data` must match the table's."""

    def query_isolated(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        """Run one statement with no state shared with any other call: no session, temporary
        table, setting or buffered partial result from before, none left after."""
        return self.query_bytes(sql, fmt)

    def command(self, sql: str) -> None:
        self.query_bytes(sql, "TabSeparated")

    def rows(self, sql: str) -> list[dict]:
        raw = self.query_bytes(sql, "JSONEachRow")
        return [json.loads(line) for line in raw.splitlines() if line]

    def scalar(self, sql: str):
        rows = self.rows(sql)
        return next(iter(rows[0].values())) if rows else None

    def close(self) -> None:
        pass


class EmbeddedStore(Store):
    """chDB in this process. Calls are serialized: one engine, one session."""

    def __init__(self, path: Path, database: str) -> None:
        from chdb import session

        self.path, self.database = Path(path), database
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._session = session.Session(str(self.path))
        except Exception as exc:  # chDB: "Error initializing EmbeddedServer" when another process has it
            raise Unavailable(f"cannot open the embedded ClickHouse store at {self.path}: {exc} "
                              "(only one process may open it; is `alpr warehouse` running?)") from None
        self._lock = threading.Lock()

    def query_bytes(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        with self._lock:
            try:
                result = self._session.query(sql, fmt)
            except Exception as exc:
                self._renew_session()
                raise StoreError(str(exc)) from None
        return result.bytes() if result is not None else b""

    def _renew_session(self) -> None:
        """After a failed statement chDB may keep its partial output buffered and hand it to the
        next query on the session (a sink's duplicate check, a purge's count): start a clean one."""
        from chdb import session

        try:
            self._session.close()
        finally:
            self._session = session.Session(str(self.path))

    def query_isolated(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        """A fresh chDB connection on the same engine for this one statement, closed after.

        The shared session is not safe for other people's queries: after a query
        failed on a result limit, its partial rows stayed buffered in the session and
        were prepended to the next result (seen with CSV, JSONEachRow and Arrow). A
        connection of its own costs well under a millisecond (docs/benchmarks.md).
        """
        from chdb import session

        with self._lock:
            conn = session.Session(str(self.path))
            try:
                result = conn.query(sql, fmt)
                return result.bytes() if result is not None else b""
            except Exception as exc:
                raise StoreError(str(exc)) from None
            finally:
                conn.close()

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        cols = ", ".join(f"`{c}`" for c in data.column_names)
        # One leading underscore: a double one inside a class is name-mangled and chDB would not find it.
        _alpr_rows = data  # noqa: F841 -- chDB's Python() table function finds it by name in this frame
        with self._lock:
            try:
                self._session.query(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM Python(_alpr_rows)")
            except Exception as exc:
                self._renew_session()
                raise StoreError(str(exc)) from None

    def close(self) -> None:
        with self._lock:
            self._session.close()


class ServerStore(Store):
    """A ClickHouse server through clickhouse-connect."""

    def __init__(self, settings: Settings) -> None:
        import clickhouse_connect

        self.database = settings.clickhouse_database
        try:
            self._client = clickhouse_connect.get_client(
                dsn=settings.clickhouse_url, username=settings.clickhouse_user,
                password=settings.clickhouse_password.get_secret_value() if settings.clickhouse_password else "",
                autogenerate_session_id=False)
        except Exception as exc:
            raise Unavailable(f"ClickHouse unreachable at {settings.clickhouse_url} (setting ALPR_CLICKHOUSE_URL): "
                              f"{exc}") from None

    def query_bytes(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        try:
            return self._client.raw_query(sql, fmt=fmt)
        except Exception as exc:
            raise StoreError(str(exc)) from None

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        try:
            self._client.insert_arrow(table, data)
        except Exception as exc:
            raise StoreError(str(exc)) from None

    def close(self) -> None:
        self._client.close()


def open_store(settings: Settings) -> Store:
    if settings.clickhouse_url:
        return ServerStore(settings)
    return EmbeddedStore(settings.data_dir / "clickhouse", settings.clickhouse_database)
