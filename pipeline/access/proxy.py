"""The gated SQL proxy: the ClickHouse HTTP interface in front of the store.

Consumes: HTTP requests from the clients analysts already use (clickhouse-connect,
curl, DBeaver, Grafana's ClickHouse source) on `bind_host:proxy_port`.
Produces: results in the format asked for, and one audit event per request on
`alpr.audit`, written and acknowledged BEFORE any result byte is sent.

Per request: credentials (basic auth or X-ClickHouse-User/Key; never in the URL)
-> account state (users.Authenticator) -> the SQL parsed and decided
(sqlpolicy.decide) -> case and purpose (settings SQL_case, SQL_purpose) -> the
checked SQL run with forced limits on a handler thread -> rows counted -> audit
-> body. A refusal is a ClickHouse-style error naming the rule, and is audited too.
If the audit write fails (AuditUnavailable) the caller gets an error and no data.

URL parameters other than `query`, `default_format`, `SQL_case`, `SQL_purpose` are
never passed to ClickHouse: a client cannot lift a limit by sending a setting.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import ipaddress
import json
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from alpr.audit.trail import AuditLog, AuditUnavailable
from alpr.core.errors import AlprError, ConfigError
from alpr.core.logs import get_log
from alpr.core.metrics import PROXY_QUERIES
from alpr.core.settings import Settings
from alpr.access.sqlpolicy import Limits, PolicyRefused, check_case, decide
from alpr.core.store import Store, StoreError
from alpr.access.users import Authenticator, LoginRefused, UserDirectory
from alpr.schemas import Codec
from alpr.schemas.models import User

log = get_log(__name__)
MAX_BODY_BYTES = 1 << 20  # a query text, not data: the proxy accepts no inserts
SERVED_PARAMS = {"query", "default_format", "SQL_case", "SQL_purpose"}
_CONTENT_TYPES = {"Native": "application/octet-stream", "Arrow": "application/octet-stream",
                  "ArrowStream": "application/octet-stream", "Parquet": "application/octet-stream"}


class ProxyError(AlprError):
    """An error answered to the client: HTTP status, ClickHouse code and name, message."""

    def __init__(self, status: int, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.name = status, code, name

    def body(self) -> bytes:
        return f"Code: {self.code}. DB::Exception: {self}. ({self.name})\n".encode()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def count_rows(fmt: str, data: bytes) -> int:
    """Rows in a result in one of sqlpolicy.FORMATS; raises ValueError if it cannot tell."""
    if fmt.startswith(("TabSeparated", "TSV")) or fmt in ("JSONEachRow", "JSONCompactEachRow",
                                                          "JSONStringsEachRow", "JSONLines", "NDJSON"):
        lines = data.count(b"\n") if data.endswith(b"\n") or not data else data.count(b"\n") + 1
        return lines - fmt.endswith("WithNames") - 2 * fmt.endswith("WithNamesAndTypes")
    if fmt.startswith("CSV"):
        n = sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"))))
        return n - fmt.endswith("WithNames") - 2 * fmt.endswith("WithNamesAndTypes")
    if fmt in ("JSON", "JSONCompact", "JSONStrings"):
        return int(json.loads(data)["rows"]) if data else 0
    if fmt in ("Arrow", "ArrowStream"):
        import pyarrow as pa

        if not data:
            return 0
        reader = pa.ipc.open_file(data) if fmt == "Arrow" else pa.ipc.open_stream(data)
        return reader.read_all().num_rows
    if fmt == "Parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows if data else 0
    if fmt == "Native":
        return _native_rows(data)
    raise ValueError(f"cannot count rows of format {fmt}")


def _native_rows(data: bytes) -> int:
    """Rows in ClickHouse Native blocks, parsed by clickhouse-connect's own reader (the analysts' client)."""
    if not data:
        return 0
    from clickhouse_connect.driver.query import QueryContext
    from clickhouse_connect.driver.transform import NativeTransform
    try:
        from clickhouse_connect.driverc.buffer import (
            ResponseBuffer,  # the C reader the column parsers expect
        )
    except ImportError:  # pure-Python build of clickhouse-connect
        from clickhouse_connect.driver.buffer import ResponseBuffer

    class _Source:
        def __init__(self, chunk: bytes) -> None:
            self.gen = iter([chunk])

        def close(self) -> None:
            pass

    result = NativeTransform.parse_response(ResponseBuffer(_Source(data)), QueryContext())
    return result.row_count


class ProxyService:
    """The proxy as a service object: the warehouse hosts it in-process, `alpr proxy` runs it alone.

    `start()` loads the users (unless given a directory), binds and serves on
    threads; `stop()` closes the listener and waits for requests in flight.
    """

    def __init__(self, settings: Settings, store: Store, codec: Codec, *, audit: AuditLog | None = None,
                 directory: UserDirectory | None = None, writer: str = "proxy", port: int | None = None) -> None:
        if not _is_loopback(settings.bind_host) and settings.proxy_tls_cert is None:
            raise ConfigError(f"setting ALPR_BIND_HOST={settings.bind_host} is not loopback: set ALPR_PROXY_TLS_CERT "
                              "and ALPR_PROXY_TLS_KEY so passwords never cross the network in clear")
        self.settings, self.store, self.codec = settings, store, codec
        self.audit = audit or AuditLog(settings, codec, writer)
        self._own_directory = directory is None
        self.directory = directory or UserDirectory(settings, codec)
        self.writer = writer
        self.limits = Limits(settings.proxy_max_result_rows, settings.proxy_max_result_bytes,
                             settings.proxy_max_execution_seconds)
        self._port = settings.proxy_port if port is None else port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.auth: Authenticator | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.proxy_tls_cert else "http"
        return f"{scheme}://{self.settings.bind_host}:{self.port}"

    def start(self) -> "ProxyService":
        if self._own_directory:
            self.directory.load().follow()
        self.auth = Authenticator(self.settings, self.directory, self.audit, self.writer)
        server = ThreadingHTTPServer((self.settings.bind_host, self._port), _handler_for(self))
        server.daemon_threads = True
        if self.settings.proxy_tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.settings.proxy_tls_cert, self.settings.proxy_tls_key)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="proxy-http", daemon=True)
        self._thread.start()
        log.info("proxy.started", host=self.settings.bind_host, port=self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._own_directory:
            self.directory.stop()
        log.info("proxy.stopped")

    # --- one request

    def handle(self, method: str, path: str, headers, body: bytes, client: str) -> tuple[int, dict, bytes]:
        """(status, headers, body) for one request. Nothing leaves before its audit event is acknowledged."""
        url = urlsplit(path)
        if url.path == "/ping" and method in ("GET", "HEAD"):
            return 200, {"Content-Type": "text/plain"}, b"Ok.\n"
        if url.path != "/":
            return self._error(ProxyError(404, 1000, "UNKNOWN", f"no handler for {url.path}"))
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        query_id = params.get("query_id") or uuid.uuid4().hex
        details = {"client": client, "query_id": query_id[:64]}
        details.update({k: v[:1000] for k, v in params.items() if k.startswith("param_")})  # the values searched for
        try:
            user = self._login(params, headers, client, details)
        except ProxyError as exc:
            return self._error(exc)
        sql = "\n".join(p for p in (params.get("query", ""), body.decode("utf-8", "replace")) if p)
        case, purpose = params.get("SQL_case"), params.get("SQL_purpose")
        started = time.perf_counter()
        try:
            if headers.get("Content-Encoding"):
                raise PolicyRefused("R-ONE", "compressed request bodies are not accepted", code=1000, status=400)
            if len(body) > MAX_BODY_BYTES:
                raise PolicyRefused("R-ONE", f"request body over {MAX_BODY_BYTES} bytes", code=62, status=413)
            decision = decide(sql, user.role, self.settings.clickhouse_database, self.limits,
                              params.get("default_format"), params)
            if not decision.connect:
                case, purpose = check_case(case, purpose)
        except PolicyRefused as exc:
            PROXY_QUERIES.labels("refused").inc()
            self._audit_quietly(user, "QUERY", "REFUSED", case, purpose, sql, str(exc), None,
                                {**details, "rule": exc.rule})
            return self._error(ProxyError(exc.status, exc.code, "ACCESS_DENIED" if exc.status == 403 else "BAD_QUERY",
                                          str(exc)))
        try:
            data = self.store.query_bytes(decision.sql, decision.fmt)
            rows = count_rows(decision.fmt, data)
        except (StoreError, ValueError) as exc:
            PROXY_QUERIES.labels("failed").inc()
            message = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
            self._audit_quietly(user, "LOGIN" if decision.connect else "QUERY", "FAILED", case, purpose, sql,
                                message, None, details)
            code, text = _engine_error(message)
            return self._error(ProxyError(500, code, "ENGINE", text))
        elapsed = time.perf_counter() - started
        extra = {**details, "format": decision.fmt, "elapsed_ms": f"{elapsed * 1000:.1f}"}
        if decision.tables:
            extra["tables"] = ",".join(decision.tables)
        try:
            self.audit.record(actor=user.name, agency=user.agency, action="LOGIN" if decision.connect else "QUERY",
                              outcome="ALLOWED", case_number=None if decision.connect else case,
                              purpose=None if decision.connect else purpose, subject=sql[:10_000], rows=rows,
                              details=extra)
        except AuditUnavailable as exc:
            log.error("proxy.audit_unavailable", actor=user.name, query_id=query_id)
            return self._error(ProxyError(503, 210, "AUDIT_UNAVAILABLE", f"{exc}; no data was returned"))
        PROXY_QUERIES.labels("connect" if decision.connect else "allowed").inc()
        log.info("proxy.query", actor=user.name, query_id=query_id, rows=rows, ms=round(elapsed * 1000, 1))
        summary = json.dumps({"read_rows": str(rows), "result_rows": str(rows), "elapsed_ns": str(int(elapsed * 1e9))})
        return 200, {"Content-Type": _CONTENT_TYPES.get(decision.fmt, "text/plain; charset=UTF-8"),
                     "X-ClickHouse-Format": decision.fmt, "X-ClickHouse-Query-Id": query_id,
                     "X-ClickHouse-Summary": summary}, data

    def _login(self, params: dict, headers, client: str, details: dict) -> User:
        """R-CREDENTIALS then R-ACCOUNT; every refusal audited (by the Authenticator or here)."""
        if "password" in params or "user" in params:
            name = params.get("user") or "-"
            self._audit_login_refused(name, "credentials in the URL are refused (they end in logs); "
                                      "use basic auth or X-ClickHouse-User/X-ClickHouse-Key", details)
        name, password = headers.get("X-ClickHouse-User"), headers.get("X-ClickHouse-Key")
        auth = headers.get("Authorization", "")
        if name is None and auth.lower().startswith("basic "):
            try:
                name, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                self._audit_login_refused("-", "malformed Authorization header", details)
        if not name or not password:
            self._audit_login_refused(name or "-", "user name and password are required (basic auth or "
                                      "X-ClickHouse-User/X-ClickHouse-Key)", details)
        try:
            return self.auth.authenticate(name, password, via="proxy", client=client)
        except LoginRefused as exc:
            raise ProxyError(401, 516, "AUTHENTICATION_FAILED", f"{name}: {exc} [rule R-ACCOUNT]") from None
        except AuditUnavailable as exc:
            raise ProxyError(503, 210, "AUDIT_UNAVAILABLE", f"{exc}; no data was returned") from None

    def _audit_login_refused(self, name: str, reason: str, details: dict) -> None:
        actor = f"unknown:{name[:64]}" if name == "-" else name[:64]
        try:
            self.audit.record(actor=actor, agency=self.settings.agency, action="LOGIN", outcome="REFUSED",
                              reason=reason, details=details)
        except AuditUnavailable:
            pass  # refused either way
        raise ProxyError(401, 516, "AUTHENTICATION_FAILED", f"{reason} [rule R-CREDENTIALS]")

    def _audit_quietly(self, user: User, action: str, outcome: str, case, purpose, sql: str, reason: str,
                       rows: int | None, details: dict) -> None:
        """Audit a refusal or failure; if the audit is down the caller still gets only the error."""
        try:
            self.audit.record(actor=user.name, agency=user.agency, action=action, outcome=outcome,
                              case_number=case or None, purpose=purpose or None, subject=sql[:10_000],
                              reason=reason, rows=rows, details=details)
        except AuditUnavailable:
            log.error("proxy.audit_unavailable", actor=user.name, outcome=outcome)

    @staticmethod
    def _error(exc: ProxyError) -> tuple[int, dict, bytes]:
        return exc.status, {"Content-Type": "text/plain; charset=UTF-8",
                            "X-ClickHouse-Exception-Code": str(exc.code)}, exc.body()


def _engine_error(message: str) -> tuple[int, str]:
    """ClickHouse's own `Code: N. DB::Exception: text` split, so it is not wrapped twice."""
    if message.startswith("Code: "):
        head, _, rest = message.partition(". DB::Exception: ")
        try:
            return int(head[6:]), rest.rstrip(".") or message
        except ValueError:
            pass
    return 1000, message


def _handler_for(service: ProxyService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients pool connections
        disable_nagle_algorithm = True  # headers and body go in separate writes: without this, +40 ms (delayed ACK)
        server_version = "alpr-proxy"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                status, headers, body = service._error(ProxyError(413, 62, "BAD_QUERY",
                                                                  f"request body over {MAX_BODY_BYTES} bytes"))
                self.close_connection = True
            else:
                body_in = self.rfile.read(length) if length else b""
                try:
                    status, headers, body = service.handle(self.command, self.path, self.headers, body_in,
                                                           self.client_address[0])
                except Exception:  # a bug must not leak data or kill the server: answer an error, log it
                    log.error("proxy.internal_error", exc_info=True)
                    status, headers, body = service._error(ProxyError(500, 1001, "STD_EXCEPTION",
                                                                      "internal proxy error; nothing was returned"))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _serve

        def log_message(self, format: str, *args) -> None:  # noqa: A002 -- stdlib signature
            pass  # the stdlib line would carry the URL; proxy.query logs ids only

    return Handler
